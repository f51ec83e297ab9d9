package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Flags is the handle RegisterFlags returns: it remembers the flag set and
// collects what the command line gave.
type Flags struct {
	fs          *pflag.FlagSet
	configFile  string
	defaultFile string
	values      map[string]*flagValue // by long flag name
}

// RegisterFlags adds the daemon's flags to fs, named as dockerd's, plus
// --config-file (default /etc/tether/daemon.json).
func RegisterFlags(fs *pflag.FlagSet) *Flags {
	return registerFlags(fs, DefaultConfigFile)
}

func registerFlags(fs *pflag.FlagSet, defaultFile string) *Flags {
	f := &Flags{fs: fs, defaultFile: defaultFile, values: map[string]*flagValue{}}
	fs.StringVar(&f.configFile, "config-file", defaultFile, "Daemon configuration file")
	for i := range options {
		f.register(&options[i])
	}
	return f
}

func (f *Flags) register(o *option) {
	v := &flagValue{opt: o}
	var pv pflag.Value = v
	if o.kind == kindBool {
		pv = boolFlagValue{v}
	}
	fl := f.fs.VarPF(pv, o.flag, o.short, o.usage)
	fl.DefValue = o.def
	if o.kind == kindBool {
		fl.NoOptDefVal = "true"
	}
	f.values[o.flag] = v
}

// Load reads the config file named by --config-file and merges the flags set
// explicitly, as LoadBytes does. A missing file is fine at the default path
// and an error at a path given explicitly.
func (f *Flags) Load() (*Config, error) {
	data, err := f.readConfigFile()
	if err != nil {
		return nil, err
	}
	return LoadBytes(f.configFile, data, f.Changed())
}

func (f *Flags) readConfigFile() ([]byte, error) {
	data, err := os.ReadFile(f.configFile)
	if errors.Is(err, fs.ErrNotExist) && !f.fs.Changed("config-file") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read config file: %w", err)
	}
	return data, nil
}

// Changed returns the flags set explicitly on the command line.
func (f *Flags) Changed() FlagValues {
	out := FlagValues{}
	for name, v := range f.values {
		if f.fs.Changed(name) {
			out[name] = v.texts
		}
	}
	return out
}

// flagValue records the texts given for one option's flag. Set checks the
// text's syntax so pflag reports a bad value at parse time.
type flagValue struct {
	opt   *option
	texts []string
}

func (v *flagValue) Set(text string) error {
	items := []string{text}
	if v.opt.comma {
		items = strings.Split(text, ",")
	}
	if _, err := v.opt.kind.parseFlag(items); err != nil {
		return err
	}
	if !v.opt.kind.repeatable() {
		v.texts = nil
	}
	v.texts = append(v.texts, items...)
	return nil
}

func (v *flagValue) String() string {
	if v.opt.kind.repeatable() {
		return fmt.Sprint(v.texts)
	}
	return strings.Join(v.texts, "")
}

func (v *flagValue) Type() string { return v.opt.kind.flagType() }

// boolFlagValue lets pflag print the flag as a bool (no value placeholder).
type boolFlagValue struct{ *flagValue }

func (boolFlagValue) IsBoolFlag() bool { return true }
