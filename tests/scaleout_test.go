package tests

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The scale-out topology, all inside network namespaces the test makes and
// deletes, with documentation addresses that exist nowhere else:
//
//	client 198.51.100.10 ── 198.51.100.1 lb ─┬─ 192.0.2.1  ── 192.0.2.11 s1
//	                         (HAProxy, and    └─ 192.0.2.65 ── 192.0.2.75 s2
//	                          a router for
//	                          direct traffic)
//
// Each server runs the shim under systemd-socket-activate --accept --inetd,
// trusting PROXY headers only from the balancer's address on its link.
const (
	soClient = "198.51.100.10"
	soFront  = "198.51.100.1"
	soLB1    = "192.0.2.1"
	soS1     = "192.0.2.11"
	soLB2    = "192.0.2.65"
	soS2     = "192.0.2.75"
	soPort   = "874"
)

// soNetns runs commands in the namespaces of one test.
type soNetns struct {
	t      *testing.T
	ip     string
	prefix string
}

func (n *soNetns) name(host string) string { return n.prefix + host }

// run runs ip with args and fails the test if it fails.
func (n *soNetns) run(args ...string) {
	n.t.Helper()
	out, code := runCmd(n.t, 30*time.Second, nil, n.ip, args...)
	if code != 0 {
		n.t.Fatalf("ip %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
}

// cmd builds a command that runs inside host's namespace.
func (n *soNetns) cmd(host, prog string, args ...string) *exec.Cmd {
	return exec.Command(n.ip, append([]string{"netns", "exec", n.name(host), prog}, args...)...)
}

// exec runs prog inside host's namespace to completion.
func (n *soNetns) exec(d time.Duration, env []string, host, prog string, args ...string) (string, int) {
	n.t.Helper()
	return runCmd(n.t, d, env, n.ip, append([]string{"netns", "exec", n.name(host), prog}, args...)...)
}

// add creates a namespace and deletes it when the test ends, pass or fail,
// after killing (by PID) whatever still runs in it.
func (n *soNetns) add(host string) {
	n.t.Helper()
	name := n.name(host)
	n.run("netns", "add", name)
	n.t.Cleanup(func() {
		pidsOut, _ := runCmd(n.t, 10*time.Second, nil, n.ip, "netns", "pids", name)
		for _, f := range strings.Fields(pidsOut) {
			var pid int
			if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if out, code := runCmd(n.t, 10*time.Second, nil, n.ip, "netns", "del", name); code != 0 {
			n.t.Errorf("ip netns del %s: %s", name, out)
		}
	})
	n.run("-n", name, "link", "set", "lo", "up")
}

// link joins two namespaces with a veth pair and addresses both ends.
func (n *soNetns) link(a, aIf, aAddr, b, bIf, bAddr string) {
	n.t.Helper()
	n.run("link", "add", aIf, "netns", n.name(a), "type", "veth", "peer", "name", bIf, "netns", n.name(b))
	n.run("-n", n.name(a), "addr", "add", aAddr, "dev", aIf)
	n.run("-n", n.name(b), "addr", "add", bAddr, "dev", bIf)
	n.run("-n", n.name(a), "link", "set", aIf, "up")
	n.run("-n", n.name(b), "link", "set", bIf, "up")
}

// newScaleOutNet builds the topology above, or skips (fails under CI=true)
// where namespaces cannot be made.
func newScaleOutNet(t *testing.T) *soNetns {
	t.Helper()
	ip := needTool(t, "ip")
	needTool(t, "sysctl")
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the scale-out test makes network namespaces and needs root (CI=true: not skipped)")
		}
		t.Skip("the scale-out test makes network namespaces and needs root")
	}
	sweepNetns(t, ip)
	id := make([]byte, 3)
	rand.Read(id)
	n := &soNetns{t: t, ip: ip, prefix: fmt.Sprintf("rsshim-%d-%s-", os.Getpid(), hex.EncodeToString(id))}
	for _, h := range []string{"client", "lb", "s1", "s2"} {
		n.add(h)
	}
	n.link("client", "lb", soClient+"/24", "lb", "client", soFront+"/24")
	n.link("lb", "s1", soLB1+"/26", "s1", "lb", soS1+"/26")
	n.link("lb", "s2", soLB2+"/26", "s2", "lb", soS2+"/26")
	n.run("-n", n.name("client"), "route", "add", "default", "via", soFront)
	n.run("-n", n.name("s1"), "route", "add", "default", "via", soLB1)
	n.run("-n", n.name("s2"), "route", "add", "default", "via", soLB2)
	// Only the balancer's namespace routes, so the client can also reach
	// a server directly (the PROXY-header refusal and the latency
	// baseline); the host's own setting is untouched.
	if out, code := n.exec(10*time.Second, nil, "lb", "sysctl", "-w", "net.ipv4.ip_forward=1"); code != 0 {
		t.Fatalf("enable forwarding in the balancer's namespace: %s", out)
	}
	return n
}

// sweepNetns deletes namespaces left by an earlier run of this test whose
// process is gone (killed by a go test -timeout panic, say, which skips
// cleanups). Only names of this test's form, rsshim-PID-..., are touched.
func sweepNetns(t *testing.T, ip string) {
	out, _ := runCmd(t, 10*time.Second, nil, ip, "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], "rsshim-") {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(f[0], "rsshim-%d-", &pid); err != nil || pid <= 1 || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		pids, _ := runCmd(t, 10*time.Second, nil, ip, "netns", "pids", f[0])
		for _, p := range strings.Fields(pids) {
			var n int
			if _, err := fmt.Sscan(p, &n); err == nil && n > 1 {
				syscall.Kill(n, syscall.SIGKILL)
			}
		}
		runCmd(t, 10*time.Second, nil, ip, "netns", "del", f[0])
		t.Logf("removed namespace %s left by an earlier run", f[0])
	}
}

// soProc is a long-running program in a namespace, with a stop that can
// be called early (a server going away) and is called again at cleanup.
type soProc struct {
	Log  *lockedBuffer
	once sync.Once
	cmd  *exec.Cmd
	done chan struct{}
}

func soStart(t *testing.T, cmd *exec.Cmd) *soProc {
	t.Helper()
	p := &soProc{Log: &lockedBuffer{}, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.Log, p.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(p.Stop)
	return p
}

// Stop ends the program and everything it started (its process group):
// SIGTERM, then SIGKILL after five seconds.
func (p *soProc) Stop() {
	p.once.Do(func() {
		pgid := p.cmd.Process.Pid
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-p.done
		}
		syscall.Kill(-pgid, syscall.SIGKILL)
	})
}

// soServer is one shim host: its rsync configuration and the
// systemd-socket-activate that runs the shim per connection.
type soServer struct {
	Name, Addr, LB string
	Dir, Log       string
	Proc           *soProc
}

func (s *soServer) rsyncLog(t *testing.T) string { return soReadFile(t, s.Log) }

// count counts rsync log lines that match re.
func (s *soServer) count(t *testing.T, re string) int {
	return len(regexp.MustCompile(re).FindAllString(s.rsyncLog(t), -1))
}

const haproxyConf = `global
	log stdout format raw local0 info
	maxconn 256

defaults
	mode tcp
	log global
	option tcplog
	timeout connect 2s
	timeout client 2m
	timeout server 2m
	timeout check 2s
	# A server that refuses the connection is retried on the other one.
	retries 2
	option redispatch 1

frontend rsync_ssl
	bind %s:%s
	default_backend shims

backend shims
	balance roundrobin
	# A plain TCP connect: the shim sees the PROXY v2 LOCAL header and the
	# close, logs one line, and never starts rsync.
	option tcp-check
	default-server send-proxy-v2 check inter 500ms fall 1 rise 2
	server s1 %s:%s
	server s2 %s:%s
`

// TestScaleOutHAProxy runs a client, HAProxy and two shim servers in their
// own network namespaces and proves, with real rsync on both ends: sessions
// spread over both servers; each server's rsync log shows the client's own
// address, never the balancer's; "hosts deny" on one server refuses there
// only; a server stopped mid-transfer sends new sessions to the other and
// the client's retry completes with every checksum matching; a PROXY header
// sent straight to a server is refused. It also measures the balancer hop.
func TestScaleOutHAProxy(t *testing.T) {
	slowTier(t, "scale-out")
	haproxy := needTool(t, "haproxy")
	ssa := needTool(t, "systemd-socket-activate")
	rsync := rsyncPath(t)
	socat := needTool(t, "socat")
	n := newScaleOutNet(t)

	p := newPKI(t)
	cert, key := p.Issue(t, "pool", CertOpts{CN: "rsync.example", DNS: []string{"rsync.example"}, IPs: []string{soFront, soS1, soS2}})
	src := filepath.Join(t.TempDir(), "src")
	makeTree(t, src, 32, 300)

	servers := []*soServer{{Name: "s1", Addr: soS1, LB: soLB1}, {Name: "s2", Addr: soS2, LB: soLB2 + "/32"}}
	for _, s := range servers {
		s.Dir = t.TempDir()
		s.Log = filepath.Join(s.Dir, "rsyncd.log")
		data := filepath.Join(s.Dir, "data")
		os.MkdirAll(data, 0o755)
		copyTree(t, src, data)
		deny := ""
		if s.Name == "s2" {
			deny = "hosts deny = " + soClient
		}
		conf := fmt.Sprintf(`log file = %s
pid file = %s
use chroot = no
# No DNS in these namespaces; rsync then logs the name as UNDETERMINED.
reverse lookup = no
uid = %d
gid = %d

[data]
path = %s
read only = yes

[guarded]
path = %s
read only = yes
%s
`, s.Log, filepath.Join(s.Dir, "rsyncd.pid"), os.Getuid(), os.Getgid(), data, data, deny)
		confFile := filepath.Join(s.Dir, "rsyncd.conf")
		if err := os.WriteFile(confFile, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		s.Proc = soStart(t, n.cmd(s.Name, ssa, "-l", s.Addr+":"+soPort, "--accept", "--inetd",
			shimBin, "serve", "--cert", cert, "--key", key, "--rsyncd-conf", confFile, "--rsync", rsync,
			"--trusted-proxy", s.LB, "--handshake-timeout", "5s"))
		mustWaitFor(t, 10*time.Second, s.Name+" listening", func() bool { return strings.Contains(s.Proc.Log.String(), "Listening on") })
	}
	confFile := filepath.Join(t.TempDir(), "haproxy.cfg")
	os.WriteFile(confFile, []byte(fmt.Sprintf(haproxyConf, soFront, soPort, soS1, soPort, soS2, soPort)), 0o644)
	lb := soStart(t, n.cmd("lb", haproxy, "-db", "-f", confFile))
	defer func() {
		if t.Failed() {
			t.Logf("haproxy:\n%s", lb.Log)
			for _, s := range servers {
				t.Logf("%s shim:\n%s\n%s rsyncd:\n%s", s.Name, s.Proc.Log, s.Name, s.rsyncLog(t))
			}
		}
	}()

	clientEnv := []string{"RSYNC_SSL_CA_CERT=" + p.CA, "RSYNC_SSL_PORT=" + soPort, "RSYNC_PORT=0"}
	shimRsync := func(args ...string) (string, int) {
		return n.exec(2*time.Minute, clientEnv, "client", shimBin, append([]string{"rsync"}, args...)...)
	}
	// The balancer is up when a listing goes through.
	mustWaitFor(t, 15*time.Second, "a listing through HAProxy", func() bool {
		_, code := shimRsync(soFront + "::")
		return code == 0
	})

	sessions := func() map[string]int {
		m := map[string]int{}
		for _, s := range servers {
			m[s.Name] = s.count(t, `connect from \S+ \(`)
		}
		return m
	}

	t.Run("spread", func(t *testing.T) {
		before := sessions()
		const N = 10
		for i := 0; i < N; i++ {
			dst := filepath.Join(t.TempDir(), "pulled")
			if out, code := shimRsync("-a", soFront+"::data/small/d01/", dst+"/"); code != 0 {
				t.Fatalf("pull %d through HAProxy: exit %d\n%s", i, code, out)
			}
		}
		// Stock rsync-ssl too; it checks host names only against DNS
		// names, so the chain is verified and the IP name check skipped.
		dst := filepath.Join(t.TempDir(), "stock")
		out, code := n.exec(2*time.Minute, append(clientEnv, "RSYNC_SSL_TYPE=openssl", "RSYNC_SSL_SKIP_HOSTNAME_CHECK=1"),
			"client", needTool(t, "rsync-ssl"), "-a", soFront+"::data/", dst+"/")
		if code != 0 {
			t.Fatalf("stock rsync-ssl through HAProxy: exit %d\n%s", code, out)
		}
		sameTree(t, src, dst)
		after := sessions()
		got := map[string]int{"s1": after["s1"] - before["s1"], "s2": after["s2"] - before["s2"]}
		t.Logf("sessions through HAProxy: s1 %d, s2 %d (of %d)", got["s1"], got["s2"], N+1)
		if got["s1"]+got["s2"] != N+1 || got["s1"] < N/2-1 || got["s2"] < N/2-1 {
			t.Errorf("sessions not spread over both servers: %v", got)
		}
	})

	t.Run("client address", func(t *testing.T) {
		for _, s := range servers {
			log := s.rsyncLog(t)
			if !strings.Contains(log, "connect from UNDETERMINED ("+soClient+")") {
				t.Errorf("%s: rsync's log never shows the client %s:\n%s", s.Name, soClient, log)
			}
			for _, bad := range []string{soLB1, soLB2, soFront, "127.0.0.1"} {
				if regexp.MustCompile(`\(` + regexp.QuoteMeta(bad) + `\)`).MatchString(log) {
					t.Errorf("%s: rsync's log shows %s instead of the client:\n%s", s.Name, bad, log)
				}
			}
			shimLog := s.Proc.Log.String()
			if !regexp.MustCompile(`rsync-ssl-shim\[\d+\]: ` + regexp.QuoteMeta(soClient) + `:\d+: served sni=- tls=TLSv1\.3 `).MatchString(shimLog) {
				t.Errorf("%s: no summary line for the client %s in the shim's log", s.Name, soClient)
			}
			// The health checks: one line each, and rsync never started
			// for them (every rsync connection above is the client's).
			// HAProxy sends PROXY v2 LOCAL and resets the connection,
			// usually before the shim has started; either way it is one
			// line and exit status 0.
			if !regexp.MustCompile(`rsync-ssl-shim\[\d+\]: health check(: connection closed by its peer| from ` + regexp.QuoteMeta(strings.TrimSuffix(s.LB, "/32")) + `:\d+: )`).MatchString(shimLog) {
				t.Errorf("%s: no health check line in the shim's log", s.Name)
			}
			if m := regexp.MustCompile(`Child \d+ died with code [1-9]\d*`).FindString(s.Proc.Log.String()); m != "" {
				t.Errorf("%s: a shim failed (%s) where only sessions and health checks arrived", s.Name, m)
			}
			served := len(regexp.MustCompile(`: served `).FindAllString(shimLog, -1))
			if c := s.count(t, `connect from \S+ \(`); c != served {
				t.Errorf("%s: rsync logged %d connections, the shim served %d: health checks reached rsync?", s.Name, c, served)
			}
		}
	})

	t.Run("hosts deny on one server", func(t *testing.T) {
		ok, denied := 0, 0
		for i := 0; i < 4; i++ {
			dst := filepath.Join(t.TempDir(), "guarded")
			out, code := shimRsync("-a", soFront+"::guarded/small/d02/", dst+"/")
			switch {
			case code == 0:
				ok++
			case strings.Contains(out, "@ERROR: access denied to guarded from UNDETERMINED ("+soClient+")"):
				denied++
			default:
				t.Fatalf("pull of guarded: exit %d\n%s", code, out)
			}
		}
		if ok != 2 || denied != 2 {
			t.Errorf("%d pulls served, %d refused; want 2 and 2 (round robin over an open and a denying server)", ok, denied)
		}
		if c := servers[1].count(t, `rsync denied on module guarded from \S+ \(`+regexp.QuoteMeta(soClient)+`\)`); c != 2 {
			t.Errorf("s2 logged %d refusals, want 2", c)
		}
		if c := servers[0].count(t, `denied`); c != 0 {
			t.Errorf("s1 refused %d times; only s2 denies", c)
		}
	})

	t.Run("proxy header straight to a server", func(t *testing.T) {
		for _, hdr := range []string{
			`PROXY TCP4 203.0.113.99 ` + soS1 + ` 4000 874\r\n`,
			// v2, TCP over IPv4, 203.0.113.99:4000 -> 192.0.2.11:874
			`\r\n\r\n\0\r\nQUIT\n!\021\0\014\313\0\161\143\300\0\002\013\017\240\003\152`,
		} {
			out, _ := n.exec(30*time.Second, nil, "client", "sh", "-c",
				fmt.Sprintf(`printf '%s' | %s -t 5 - TCP:%s:%s`, hdr, socat, soS1, soPort))
			if strings.Contains(out, "@RSYNCD") {
				t.Errorf("rsync answered a forged PROXY header: %q", out)
			}
		}
		re := regexp.MustCompile(`tls handshake with ` + regexp.QuoteMeta(soClient) + `:\d+: PROXY protocol header from a peer not in --trusted-proxy`)
		mustWaitFor(t, 10*time.Second, "two refusals in s1's log", func() bool { return len(re.FindAllString(servers[0].Proc.Log.String(), -1)) == 2 })
		if strings.Contains(servers[0].rsyncLog(t), "203.0.113.99") {
			t.Error("the forged address reached rsync")
		}
	})

	t.Run("latency", func(t *testing.T) {
		// Module listings, interleaved so drift hits both paths equally:
		// through HAProxy, and straight to s1 over the same namespaces
		// (the balancer's namespace routes it in the kernel). Two
		// measures: "check --json", whose hop times (TCP connect, TLS,
		// rsync greeting, module list) leave out the client's process
		// starts, and the wall time of a whole "rsync-ssl-shim rsync".
		const N = 31
		var checkLB, checkDirect, wallLB, wallDirect []time.Duration
		for i := 0; i < N; i++ {
			for _, target := range []string{soFront, soS1} {
				out, code := n.exec(time.Minute, clientEnv, "client", shimBin, "check", "--json", target)
				var rep struct {
					OK   bool `json:"ok"`
					Hops []struct {
						Hop string  `json:"hop"`
						MS  float64 `json:"ms"`
					} `json:"hops"`
				}
				if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 || !rep.OK {
					t.Fatalf("check %s: exit %d, %v\n%s", target, code, err, out)
				}
				var sum time.Duration
				for _, h := range rep.Hops {
					if h.Hop != "resolve" {
						sum += time.Duration(h.MS * float64(time.Millisecond))
					}
				}
				start := time.Now()
				out, code = shimRsync(target + "::")
				wall := time.Since(start)
				if code != 0 {
					t.Fatalf("listing %s: exit %d\n%s", target, code, out)
				}
				if target == soFront {
					checkLB, wallLB = append(checkLB, sum), append(wallLB, wall)
				} else {
					checkDirect, wallDirect = append(checkDirect, sum), append(wallDirect, wall)
				}
			}
		}
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		report := func(what string, lb, direct []time.Duration) {
			mLB, mDirect := soQuantile(lb, 0.5), soQuantile(direct, 0.5)
			t.Logf("%s, %d interleaved runs each: through HAProxy median %v (p25 %v, p75 %v); straight to a server median %v (p25 %v, p75 %v); balancer hop %v",
				what, N, r(mLB), r(soQuantile(lb, 0.25)), r(soQuantile(lb, 0.75)),
				r(mDirect), r(soQuantile(direct, 0.25)), r(soQuantile(direct, 0.75)), r(mLB-mDirect))
		}
		report("connect to module list (check --json, hop times summed)", checkLB, checkDirect)
		report("whole listing (rsync-ssl-shim rsync HOST::, wall time)", wallLB, wallDirect)
	})

	t.Run("server stopped mid-transfer", func(t *testing.T) {
		transfers := func(s *soServer) int { return s.count(t, `rsync on data/ from \S+ `) }
		base := []int{transfers(servers[0]), transfers(servers[1])}
		dst := filepath.Join(t.TempDir(), "pulled")
		type result struct {
			out  string
			code int
		}
		first := make(chan result, 1)
		go func() {
			// About four seconds at this rate: long enough to stop the
			// server in the middle.
			out, code := shimRsync("-a", "--bwlimit=8000", soFront+"::data/", dst+"/")
			first <- result{out, code}
		}()
		var victim, survivor *soServer
		mustWaitFor(t, 20*time.Second, "the transfer to start on a server", func() bool {
			for i, s := range servers {
				if transfers(s) > base[i] {
					victim, survivor = s, servers[1-i]
					return true
				}
			}
			return false
		})
		time.Sleep(time.Second)
		victim.Proc.Stop()
		t.Logf("stopped %s during the transfer", victim.Name)
		var r result
		select {
		case r = <-first:
		case <-time.After(2 * time.Minute):
			t.Fatal("the interrupted transfer did not end")
		}
		if r.code == 0 {
			t.Fatalf("the transfer finished before %s was stopped; nothing was tested", victim.Name)
		}
		survivorBefore := survivor.count(t, `connect from \S+ \(`)
		attempts := 0
		for {
			attempts++
			out, code := shimRsync("-a", soFront+"::data/", dst+"/")
			if code == 0 {
				break
			}
			if attempts == 3 {
				t.Fatalf("retry %d failed: exit %d\n%s", attempts, code, out)
			}
			time.Sleep(time.Second)
		}
		sameTree(t, src, dst)
		for i := 0; i < 4; i++ {
			if out, code := shimRsync(soFront + "::"); code != 0 {
				t.Fatalf("listing after the stop: exit %d\n%s", code, out)
			}
		}
		if got := survivor.count(t, `connect from \S+ \(`) - survivorBefore; got != attempts+4 {
			t.Errorf("%s served %d sessions after the stop, want %d", survivor.Name, got, attempts+4)
		}
		t.Logf("retry completed on %s after %d attempt(s)", survivor.Name, attempts)
	})
}

// soQuantile is the q-quantile (nearest rank) of ds.
func soQuantile(ds []time.Duration, q float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(q*float64(len(s)-1)+0.5)]
}
