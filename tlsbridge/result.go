package tlsbridge

import (
	"fmt"
	"time"
)

// Result is the outcome of one connection, for its summary line.
type Result struct {
	Peer     string
	SNI      string
	Version  string
	Cipher   string
	Identity string
	// Module is what the client asked rsync for: a module name, or
	// "#list" for a module listing; "" if it never said.
	Module string
	// Pair is the kind of socket pair rsync got ("" before one was made,
	// "-" on the kernel data path, which has none).
	Pair string
	// DataPath is the path the session took, "ktls" or "bridge", once it
	// took one.
	DataPath string
	// Fallback says why an auto session was bridged, "" otherwise.
	Fallback FallbackReason
	// RsyncExit is rsync's exit status, or -1 if rsync was never started.
	RsyncExit int
	// RsyncPID is rsync's process ID, 0 if rsync was never started.
	RsyncPID int
	In, Out  int64
	Duration time.Duration
	// Err is why the connection failed before or around rsync; nil when
	// it was served, whatever rsync's own status.
	Err error
}

// String is the one summary line for a served connection.
func (r Result) String() string {
	sni := sniField(r.SNI)
	id := r.Identity
	if id == "" {
		id = "-"
	}
	mod := r.Module
	if mod == "" {
		mod = "-"
	}
	s := fmt.Sprintf("%s: served sni=%s tls=%s cipher=%s client=%s module=%s pair=%s rsync_exit=%d in=%d out=%d duration=%s datapath=%s",
		r.Peer, sni, r.Version, r.Cipher, id, mod, r.Pair, r.RsyncExit, r.In, r.Out, r.Duration.Round(time.Millisecond), r.DataPath)
	if r.Fallback != "" {
		s += " fallback=\"" + string(r.Fallback) + "\""
	}
	if r.Err != nil {
		s += " error=\"" + r.Err.Error() + "\""
	}
	return s
}

// Listing reports whether the client only asked for the module list. rsync
// ends a listing with exit status 255 (its start_daemon returns -1), which
// must not count as a failure.
func (r Result) Listing() bool { return r.Module == "#list" }
