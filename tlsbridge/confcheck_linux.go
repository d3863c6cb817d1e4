package tlsbridge

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/tlsbridge/rsyncd"
)

// DefaultRsyncdConf is the rsyncd.conf an rsync --daemon started as a
// service reads when it is given none.
const DefaultRsyncdConf = "/etc/rsyncd.conf"

// RsyncdConf is the rsyncd.conf the sessions' rsync reads.
func (s *Server) RsyncdConf() string {
	if s.Rsync.Conf != "" {
		return s.Rsync.Conf
	}
	return DefaultRsyncdConf
}

// ConfError is an rsyncd.conf that rsync itself refused: missing,
// unreadable, or not parsed.
type ConfError struct {
	Conf string
	// Said is what rsync logged about it, "" if it logged nothing.
	Said string
	Exit int
}

func (e *ConfError) Error() string {
	said := e.Said
	if said == "" {
		said = fmt.Sprintf("exit status %d, nothing logged", e.Exit)
	}
	return fmt.Sprintf("rsyncd.conf %s: rsync refuses it: %s", e.Conf, said)
}

// CheckRsyncdConf has rsync read its configuration the way each session's
// rsync will, as the same user with the same arguments, and returns a
// *ConfError when rsync refuses it. rsync's own parser is the judge: it
// is started in inetd mode on a pair of our own, with no PROXY header and
// its log sent to a file of ours; a greeting means the file parsed (rsync
// reads all of it before greeting). rsync writes nothing to stderr there,
// so its words come from that log.
func (s *Server) CheckRsyncdConf() error {
	dir, err := os.MkdirTemp("", "rsync-ssl-shim-conf-")
	if err != nil {
		return fmt.Errorf("check rsyncd.conf %s: %w", s.RsyncdConf(), err)
	}
	defer os.RemoveAll(dir)
	rsync := s.Rsync
	if u := rsync.User; u != nil {
		// rsync opens its log as the user it runs as. Without CAP_CHOWN
		// (the packaged unit keeps only setuid, setgid and kill) the
		// directory lets that user in to create the log, and list nothing.
		err := os.Chown(dir, int(u.Uid), int(u.Gid))
		if errors.Is(err, fs.ErrPermission) {
			err = os.Chmod(dir, 0o733)
		}
		if err != nil {
			return fmt.Errorf("check rsyncd.conf %s: %w", s.RsyncdConf(), err)
		}
	}
	logFile := filepath.Join(dir, "rsync.log")
	rsync.Proxy = rsyncd.ProxyOff
	rsync.Args = append(append([]string(nil), rsync.Args...), "--log-file="+logFile)
	// The loopback TCP pair, whatever the sessions get: every rsync
	// takes it, so only the configuration can keep rsync from greeting.
	pair, err := NewPair(PairTCP)
	if err != nil {
		return fmt.Errorf("check rsyncd.conf %s: %w", s.RsyncdConf(), err)
	}
	defer pair.Ours.Close()
	proc, err := s.startRsync(rsync, pair.Theirs, "", s.Env)
	pair.Theirs.Close()
	if err != nil {
		return fmt.Errorf("check rsyncd.conf %s: %w", s.RsyncdConf(), err)
	}
	pair.Ours.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, rerr := bufio.NewReader(pair.Ours).ReadString('\n')
	// Greeted or not, we are done with it: at EOF rsync exits by itself.
	pair.Ours.Close()
	exit := proc.reap()
	if rerr == nil && strings.HasPrefix(line, "@RSYNCD: ") {
		return nil
	}
	return &ConfError{Conf: s.RsyncdConf(), Said: rsyncSaid(logFile), Exit: exit}
}

// rsyncSaid is the gist of an rsync log: its messages without time stamp
// and PID, without the final "rsync error: ... (code N)", at most three.
func rsyncSaid(logFile string) string {
	b, err := os.ReadFile(logFile)
	if err != nil {
		return ""
	}
	var said []string
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, "] "); i >= 0 && i < 40 {
			l = l[i+2:]
		}
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "rsync error: ") || len(said) == 3 {
			continue
		}
		said = append(said, l)
	}
	return strings.Join(said, "; ")
}

// IsConfError reports an rsyncd.conf that rsync refused.
func IsConfError(err error) bool {
	var ce *ConfError
	return errors.As(err, &ce)
}
