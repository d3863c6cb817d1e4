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
)

// logger writes one line per event: "rsync-ssl-shim[PID]: ...", with a
// timestamp unless journald is reading (it stamps lines itself).
type logger struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	stamps bool
}

func newLogger(w io.Writer) *logger {
	return &logger{
		w:      w,
		prefix: fmt.Sprintf("rsync-ssl-shim[%d]: ", os.Getpid()),
		stamps: os.Getenv("JOURNAL_STREAM") == "",
	}
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
	msg := fmt.Sprintf(format, args...)
	// One event, one line: a newline inside a message (from a peer's
	// bytes, say) must not forge a second log line.
	msg = strings.ReplaceAll(strings.TrimRight(msg, "\n"), "\n", "\\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stamps {
		fmt.Fprintf(l.w, "%s %s%s\n", time.Now().Format(time.RFC3339), l.prefix, msg)
		return
	}
	fmt.Fprintf(l.w, "%s%s\n", l.prefix, msg)
}

// Write lets flag errors and usage go through the logger's destination.
func (l *logger) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
