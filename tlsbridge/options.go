package tlsbridge

import (
	"errors"
	"fmt"
	"strings"
)

// Option is one of the server's settings, as this package names it in its
// texts: "client CA bundle /etc/x.pem: no PEM certificate in it". The
// command line renders the same texts with its own names for the options
// (OptionError.Render), so that the user reads the flag to fix.
type Option string

// The options this package's configuration errors name.
const (
	OptCert       Option = "certificate"
	OptKey        Option = "private key"
	OptClientAuth Option = "client-certificate mode"
	OptClientCA   Option = "client CA bundle"
	OptCRL        Option = "CRL"
	OptCRLStrict  Option = "strict CRL checking"
	OptAllowCN    Option = "CN allow-list"
	OptAllowDNS   Option = "DNS-name allow-list"
	OptAllowURI   Option = "URI allow-list"
	OptAllowEmail Option = "email allow-list"
	OptAllowSPKI  Option = "key pins"
)

// Namer names an option in a text; nil stands for the neutral name.
type Namer func(Option) string

func (n Namer) name(o Option) string {
	if n == nil {
		return string(o)
	}
	return n(o)
}

// OptionError is a configuration error: a text about options (and the
// files given for them), rendered with neutral names by Error and with the
// caller's names by Render. Err is the cause (a read or parse error), if any.
type OptionError struct {
	Option Option // the option at fault
	Err    error
	usage  bool // the options do not fit together (ErrClientAuthUsage)
	format string
	args   []any // Option and []Option arguments are rendered by name
}

// optErr makes an OptionError; a %w verb in format wraps its argument.
func optErr(o Option, format string, args ...any) *OptionError {
	e := &OptionError{Option: o, format: format, args: args}
	e.Err = errors.Unwrap(fmt.Errorf(format, args...))
	return e
}

// optUsage is optErr for options that do not fit together.
func optUsage(o Option, format string, args ...any) *OptionError {
	e := optErr(o, format, args...)
	e.usage = true
	return e
}

func (e *OptionError) Error() string { return e.Render(nil) }

// Render is the error's text with each option named by n.
func (e *OptionError) Render(n Namer) string {
	args := make([]any, len(e.args))
	for i, a := range e.args {
		switch a := a.(type) {
		case Option:
			args[i] = n.name(a)
		case []Option:
			names := make([]string, len(a))
			for j, o := range a {
				names[j] = n.name(o)
			}
			args[i] = strings.Join(names, ", ")
		default:
			args[i] = a
		}
	}
	return fmt.Errorf(e.format, args...).Error()
}

func (e *OptionError) Unwrap() error { return e.Err }

// Is reports a usage mistake as ErrClientAuthUsage.
func (e *OptionError) Is(t error) bool { return e.usage && t == ErrClientAuthUsage }
