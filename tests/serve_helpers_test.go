package tests

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// server is a running serve setup: where to reach it and what it logged.
type server struct {
	Host   string
	Port   int
	Log    *lockedBuffer
	Starts string // file the rsync wrapper appends to on each start, if used
	Pid    int    // the process started (serve, systemd-socket-activate or xinetd)
}

// serveArgs is the serve command line shared by every start mode.
func serveArgs(p *PKI, rd *Rsyncd, rsync string, extra ...string) []string {
	args := []string{"serve", "--cert", p.Cert, "--key", p.Key, "--rsyncd-conf", rd.Conf, "--rsync", rsync}
	return append(args, extra...)
}

// rsyncPath is the system rsync, required by every serve test.
func rsyncPath(t testing.TB) string {
	t.Helper()
	needTool(t, "rsync")
	p, _ := exec.LookPath("rsync")
	return p
}

// startMode starts serve the way a service manager would:
//
//	inetd     systemd-socket-activate --accept --inetd (fd 0, like StandardInput=socket)
//	listenfds systemd-socket-activate --accept (connected socket in LISTEN_FDS)
//	acceptno  systemd-socket-activate without --accept (listening socket, our accept loop)
//	listen    serve --listen
//	xinetd    a real xinetd in the foreground, "wait = no" (fds 0, 1, 2 are the socket)
func startMode(t *testing.T, mode string, args []string) *server {
	t.Helper()
	port := freePort(t, "127.0.0.1")
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	s := &server{Host: "localhost", Port: port}
	var cmd *exec.Cmd
	switch mode {
	case "inetd", "listenfds", "acceptno":
		ssa := needTool(t, "systemd-socket-activate")
		a := []string{"-l", addr}
		switch mode {
		case "inetd":
			a = append(a, "--accept", "--inetd")
		case "listenfds":
			a = append(a, "--accept")
		}
		a = append(a, shimBin)
		cmd = exec.Command(ssa, append(a, args...)...)
	case "listen":
		cmd = exec.Command(shimBin, append(args, "--listen", addr)...)
	case "xinetd":
		xi := needTool(t, "xinetd")
		dir := t.TempDir()
		conf := filepath.Join(dir, "xinetd.conf")
		body := fmt.Sprintf(`defaults
{
	instances = 50
}

service rsync-ssl
{
	type        = UNLISTED
	socket_type = stream
	protocol    = tcp
	port        = %d
	bind        = 127.0.0.1
	wait        = no
	user        = root
	server      = %s
	server_args = %s
	disable     = no
}
`, port, shimBin, strings.Join(args, " "))
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd = exec.Command(xi, "-dontfork", "-f", conf, "-pidfile", filepath.Join(dir, "xinetd.pid"))
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	s.Log = startBg(t, cmd)
	s.Pid = cmd.Process.Pid
	waitPortOr(t, addr, 10*time.Second, s.Log)
	return s
}

// startServeListening starts serve on a listening socket on fd 0 (as
// xinetd "wait = yes" hands it over) bound here to a port the kernel picked:
// the port is held from bind to serve's exit, so no other test can take it
// between a check and a use, as it could with freePort and --listen.
// Connections queue in the socket's backlog until serve accepts them.
func startServeListening(t *testing.T, args []string) *server {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.(*net.TCPListener).File()
	l.Close() // f holds its own copy of the socket
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(shimBin, args...)
	cmd.Stdin = f
	log := startBg(t, cmd)
	f.Close() // serve holds the socket now; it closes when serve exits
	port := l.Addr().(*net.TCPAddr).Port
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if !waitFor(func() bool { return strings.Contains(log.String(), "serving "+addr) }, 10*time.Second) {
		t.Fatalf("serve on a listening fd 0 (%s) never logged its start line:\n%s", addr, log)
	}
	return &server{Host: "localhost", Port: port, Log: log, Pid: cmd.Process.Pid}
}

// rsyncSSL runs stock rsync-ssl with the given type against s.
func rsyncSSL(t *testing.T, s *server, p *PKI, typ string, args ...string) (string, int) {
	t.Helper()
	needTool(t, "rsync-ssl")
	switch typ {
	case "openssl":
		needTool(t, "openssl")
	case "stunnel":
		needTool(t, "stunnel4", "stunnel")
	}
	env := []string{
		"RSYNC_SSL_TYPE=" + typ,
		"RSYNC_SSL_CA_CERT=" + p.CA,
		"RSYNC_SSL_PORT=" + strconv.Itoa(s.Port),
		"RSYNC_PORT=0",
	}
	return runCmd(t, 3*time.Minute, env, "rsync-ssl", args...)
}

// rsyncWrapper writes a script that records each start of rsync (one line
// per start) and then runs the real rsync, so a test can prove that rsync
// was, or was never, started.
func rsyncWrapper(t *testing.T) (wrapper, starts string) {
	t.Helper()
	real := rsyncPath(t)
	dir := t.TempDir()
	wrapper = filepath.Join(dir, "rsync-wrapper")
	starts = filepath.Join(dir, "starts")
	script := fmt.Sprintf("#!/bin/sh\necho \"$$ $*\" >> %s\nexec %s \"$@\"\n", starts, real)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return wrapper, starts
}

func countStarts(t *testing.T, starts string) int {
	t.Helper()
	b, err := os.ReadFile(starts)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	// Sessions' rsync only: the accept loop's start has rsync read its
	// rsyncd.conf once, logging to a directory of its own.
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" && !strings.Contains(l, "rsync-ssl-shim-conf-") {
			n++
		}
	}
	return n
}
