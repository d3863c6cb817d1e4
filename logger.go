//go:build linux

package main

import (
	"fmt"
	"io"
	"log/syslog"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/journal"
)

// logger writes one line per event: "rsync-ssl-shim[PID]: ...", with a
// timestamp, unless journald is reading: it stamps and prefixes each line
// itself (journalctl showed "rsync-ssl-shim[PID]: " twice otherwise).
type logger struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	stamps bool
	// journal: stderr is journald's stream, so events with fields of their
	// own go to journald natively instead (once, not on both).
	journal bool
}

func newLogger(w io.Writer) *logger {
	l := &logger{
		w:      w,
		prefix: fmt.Sprintf("rsync-ssl-shim[%d]: ", os.Getpid()),
		stamps: true,
	}
	// JOURNAL_STREAM alone may be inherited from a parent; only stderr
	// being that very stream (its device and inode) says journald reads us.
	if w == io.Writer(os.Stderr) {
		if ok, err := journal.StderrIsJournalStream(); err == nil && ok {
			l.prefix, l.stamps = "", false
			l.journal = journal.Enabled()
		}
	}
	return l
}

// Event logs one event line that also carries fields (RSYNC_SSL_CLIENT=...):
// under journald the line goes to the journal with them, so that
// "journalctl RSYNC_SSL_CLIENT=198.51.100.7" finds it; elsewhere, or if the
// journal refuses it, it is the plain line on stderr or syslog.
func (l *logger) Event(warn bool, fields map[string]string, format string, args ...any) {
	if l.journal {
		msg := oneLine(fmt.Sprintf(format, args...))
		pri := journal.PriInfo
		if warn {
			pri = journal.PriWarning
		}
		f := map[string]string{"SYSLOG_IDENTIFIER": "rsync-ssl-shim", "SYSLOG_PID": fmt.Sprint(os.Getpid())}
		for k, v := range fields {
			f[k] = oneLine(v)
		}
		if journal.Send(msg, pri, f) == nil {
			return
		}
	}
	l.Logf(format, args...)
}

// newSyslogLogger is for when stderr is the client connection (xinetd):
// syslog adds the tag and PID itself. Without a syslog socket there is
// nowhere safe to write, and nothing is written.
func newSyslogLogger() *logger {
	w, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "rsync-ssl-shim")
	if err != nil {
		return &logger{w: io.Discard}
	}
	return &logger{w: w}
}

func (l *logger) Logf(format string, args ...any) {
	msg := oneLine(fmt.Sprintf(format, args...))
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stamps {
		fmt.Fprintf(l.w, "%s %s%s\n", time.Now().Format(time.RFC3339), l.prefix, msg)
		return
	}
	fmt.Fprintf(l.w, "%s%s\n", l.prefix, msg)
}

// maxLogLine bounds one message: a peer can put tens of kilobytes into a
// TLS hello, and no line we mean to write comes near this.
const maxLogLine = 4096

// oneLine makes a message fit for one log line, whatever a peer put in it.
// One event, one line: a newline (or a carriage return, which a terminal
// or a log viewer treats alike) must not forge a second line, and an escape
// sequence must not rewrite the reader's screen. So every control byte,
// C1 control and invalid UTF-8 byte is escaped as \xNN (\n, \r, \t
// spelled out), and a message longer than maxLogLine is cut, its length
// noted.
func oneLine(msg string) string {
	msg = strings.TrimRight(msg, "\n")
	var b strings.Builder
	for i := 0; i < len(msg); {
		if b.Len() >= maxLogLine {
			fmt.Fprintf(&b, "...(cut, %d bytes)", len(msg))
			break
		}
		r, size := utf8.DecodeRuneInString(msg[i:])
		switch {
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError && size <= 1, r < 0x20, r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, msg[i])
		case r >= 0x80 && r < 0xa0:
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(msg[i : i+size])
		}
		i += size
	}
	return b.String()
}

// Write lets flag errors and usage go through the logger's destination.
func (l *logger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
