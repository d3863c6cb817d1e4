package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
)

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// commandHelp is what a command's --help says around its flags.
type commandHelp struct {
	synopsis string // after "Usage: rsync-ssl-shim "; more lines for more forms
	about    string // what the command does
	after    string // exit status and examples, after the flags
}

// newFlagSet returns the FlagSet every command uses: its --help prints the
// synopsis, the text, then each flag as "  --name ARG" followed by its
// description (the form the man page test reads back), then the rest.
// Flags are declared once, with their descriptions; nothing else lists them.
func newFlagSet(name string, h commandHelp, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: rsync-ssl-shim %s\n\n%s\n", strings.ReplaceAll(h.synopsis, "\n", "\n       rsync-ssl-shim "), strings.TrimSpace(h.about))
		fmt.Fprintln(w, "\nFlags:")
		printFlags(w, fs)
		if h.after != "" {
			fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(h.after))
		}
	}
	return fs
}

func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if len(f.Name) == 1 {
			line = "  -" + f.Name // rsync's own single-letter options
		}
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintln(w, line)
		for _, l := range strings.Split(usage, "\n") {
			fmt.Fprintln(w, "        "+l)
		}
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" && f.DefValue != "0s" {
			fmt.Fprintf(w, "        (default %s)\n", f.DefValue)
		}
	})
}

// parseFlags parses args and maps the outcome to an exit code: -1 to go on,
// exitOK after --help (printed on stdout), exitUsage after a bad flag.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) int {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			fs.SetOutput(stdout)
		}
	}
	err := fs.Parse(args)
	switch {
	case err == flag.ErrHelp:
		return exitOK
	case err != nil:
		return exitUsage
	}
	return -1
}
