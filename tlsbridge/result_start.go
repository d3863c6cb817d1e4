package tlsbridge

import "fmt"

// StartString is the line for a session whose rsync has just started: the
// summary's known part, and rsync's PID to find the session in rsync's own
// log while it runs.
func (r Result) StartString() string {
	id := r.Identity
	if id == "" {
		id = "-"
	}
	return fmt.Sprintf("%s: started sni=%s tls=%s cipher=%s client=%s datapath=%s pair=%s rsync_pid=%d",
		r.Peer, sniField(r.SNI), r.Version, r.Cipher, id, r.DataPath, r.Pair, r.RsyncPID)
}

// rsyncStarted is called by a data path once its rsync runs: the session
// is then in the summary's known part, and OnStart hears of it.
func (s *Server) rsyncStarted(res *Result, path, pair string, pid int) {
	res.DataPath, res.Pair, res.RsyncPID = path, pair, pid
	if s.OnStart != nil {
		s.OnStart(*res)
	}
}
