package cmdconn

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// SSH is a parsed ssh://[USER@]HOST[:PORT][/SOCKET] address.
type SSH struct {
	User, Host, Port string
	Socket           string // daemon socket on the remote host; "" = its default
}

// ParseSSH parses an ssh:// address. Passwords, queries and fragments are
// refused, and so are a user or host starting with "-", which ssh would
// take for an option.
func ParseSSH(raw string) (SSH, error) {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return SSH{}, err
	}
	if u.Scheme != "ssh" {
		return SSH{}, fmt.Errorf("scheme %q is not ssh", u.Scheme)
	}
	s := SSH{Host: u.Hostname(), Port: u.Port(), Socket: u.Path}
	if strings.Trim(s.Socket, "/") == "" {
		s.Socket = ""
	}
	if u.User != nil {
		s.User = u.User.Username()
		if _, ok := u.User.Password(); ok {
			return SSH{}, errors.New("a password in the address is not supported (use keys or ssh's prompt)")
		}
	}
	return s, s.validate(u)
}

func (s SSH) validate(u *url.URL) error {
	switch {
	case s.Host == "":
		return errors.New("no host name")
	case strings.HasPrefix(s.Host, "-"), strings.HasPrefix(s.User, "-"):
		return errors.New("user and host must not start with \"-\"")
	case u.RawQuery != "" || u.ForceQuery:
		return fmt.Errorf("query %q not allowed", u.RawQuery)
	case u.Fragment != "":
		return fmt.Errorf("fragment %q not allowed", u.Fragment)
	}
	if s.Port != "" {
		if n, err := strconv.Atoi(s.Port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("port %q is not a number from 1 to 65535", s.Port)
		}
	}
	return nil
}

// Args returns the arguments of ssh that run remote on the host:
// `-o ConnectTimeout=30 -T [-l USER] [-p PORT] -- HOST REMOTE...`. -T keeps
// ssh from allocating a terminal (the stream is binary). ssh hands the
// remote words to the remote user's shell joined by spaces, so each word is
// quoted for a POSIX shell where it needs to be.
func (s SSH) Args(remote ...string) []string {
	args := []string{"-o", "ConnectTimeout=30", "-T"}
	if s.User != "" {
		args = append(args, "-l", s.User)
	}
	if s.Port != "" {
		args = append(args, "-p", s.Port)
	}
	args = append(args, "--", s.Host)
	for _, w := range remote {
		args = append(args, ShellQuote(w))
	}
	return args
}

// ShellQuote returns w unchanged when a POSIX shell would read it as one
// word as it is, and single-quoted otherwise.
func ShellQuote(w string) string {
	if w != "" && strings.Trim(w, safeChars) == "" {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

const safeChars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=/.,:@%"
