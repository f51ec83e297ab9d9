package main

import (
	"github.com/spf13/cobra"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/daemon"
)

// daemonCmd is `tether daemon`: load the configuration from flags and the
// config file, then run the daemon until signalled.
func daemonCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "daemon [flags]",
		Short: "Run the Tether daemon",
		Args:  cobra.NoArgs,
	}
	// The daemon's -H means "listen here" and its --tls* flags are its
	// server's: they shadow the client's persistent flags of the same names
	// by being registered locally.
	flags := config.RegisterFlags(cmd.Flags())
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		cfg, err := flags.Load()
		if err != nil {
			return err
		}
		return daemon.Run(cfg)
	}
	return cmd
}
