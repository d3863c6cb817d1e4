//go:build linux

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/coreos/go-systemd/v22/journal"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/activation"
)

// A package upgrade replaces /usr/bin/rsync-ssl-shim but does not restart
// rsync-ssl.service: a restart would cut every transfer in flight, and a busy
// accept loop may never be idle long enough to exit by itself. So the accept
// loop watches its own binary; once another file sits at the path it was
// started from, it starts that file with its own arguments and hands it the
// listening sockets, waits until the new process says it serves, names it to
// systemd as the service's main process (MAINPID=), stops accepting and
// serves its own sessions to their end. Connections that arrive meanwhile wait
// in the kernel's backlog of the one socket both processes hold, so none is
// refused. A new binary that does not come up (a bad build, a flag it no
// longer takes) changes nothing: the old process logs why and keeps serving.

// exePoll is how often the accept loop looks at its binary; SIGHUP (the
// package's "systemctl reload" after an upgrade) looks at once.
const exePoll = 2 * time.Second

// handoverReadyTimeout bounds how long a new binary may take to say it serves:
// it loads the certificates and reads rsync, milliseconds in practice.
const handoverReadyTimeout = 30 * time.Second

// handover is one accept loop's side of binary upgrades: as the successor of
// an older process (src.HandedOverBy), and as the predecessor of a newer one.
type handover struct {
	log *logger
	src *activation.Source
	// exe is the path this binary was started from, as the kernel
	// recorded it; self is the file that runs.
	exe  string
	self exeID
	// ambient are the ambient capabilities this process started with:
	// starting rsync clears them on the thread that does it, and the new
	// binary needs them back (the unit's AmbientCapabilities=).
	ambient []uintptr
	// done is closed once the sockets are handed over; then successor
	// is the new process's PID and version.
	done      chan struct{}
	successor int
	version   string
	sessions  atomic.Int64
}

// exeID tells one binary file from another, and a file still being written
// from the same file finished.
type exeID struct {
	dev, ino           uint64
	size, mtime, ctime int64
}

func statExe(path string) (exeID, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return exeID{}, err
	}
	return exeID{dev: st.Dev, ino: st.Ino, size: st.Size, mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano()}, nil
}

// newHandover prepares the accept loop's side of upgrades. In a successor
// under journald it also sends its log lines to the journal natively: the
// stderr stream it inherited is attributed to the process that opened it.
func newHandover(src *activation.Source, log *logger) *handover {
	h := &handover{log: log, src: src, done: make(chan struct{})}
	if link, err := os.Readlink("/proc/self/exe"); err == nil {
		h.exe = strings.TrimSuffix(link, " (deleted)")
	}
	h.self, _ = statExe("/proc/self/exe")
	h.ambient = ambientCaps()
	if src.HandedOverBy != 0 && log.journal {
		log.mu.Lock()
		log.w, log.prefix = journalLines{fallback: log.w}, ""
		log.mu.Unlock()
	}
	return h
}

// journalLines writes each logger line to journald as an entry of this
// process's own.
type journalLines struct{ fallback io.Writer }

func (j journalLines) Write(p []byte) (int, error) {
	msg := strings.TrimSuffix(string(p), "\n")
	pri := journal.PriInfo
	if strings.HasPrefix(msg, "warning: ") {
		pri = journal.PriWarning
	}
	f := map[string]string{"SYSLOG_IDENTIFIER": "rsync-ssl-shim", "SYSLOG_PID": strconv.Itoa(os.Getpid())}
	if journal.Send(msg, pri, f) == nil {
		return len(p), nil
	}
	return j.fallback.Write(p)
}

// held says whether the process that handed us the sockets still serves
// sessions of the same service: until it exits we must not exit idle, or
// systemd would take the service for stopped and end its transfers too.
func (h *handover) held() bool {
	return h.src.HandedOverBy != 0 && os.Getppid() == h.src.HandedOverBy
}

// waitPredecessor keeps a process that handed its sockets on, and has
// drained, alive until the process that handed them to it has exited too:
// the chain of an upgrade after an upgrade ends oldest first, so the newest,
// systemd's main process, never exits idle while an older one still serves.
func (h *handover) waitPredecessor(ctx context.Context) {
	if !h.handedOver() || !h.held() {
		return
	}
	h.log.Logf("sessions drained; waiting for PID %d, which handed the socket to us, to end its own", h.src.HandedOverBy)
	for h.held() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// session counts one connection in flight; call the result when it ends.
func (h *handover) session() func() {
	h.sessions.Add(1)
	return func() { h.sessions.Add(-1) }
}

// handedOver says whether the sockets went to a new binary.
func (h *handover) handedOver() bool {
	select {
	case <-h.done:
		return true
	default:
		return false
	}
}

// watch tells the process that handed us the sockets (if one did) that we
// serve, then looks for a new binary every exePoll and on SIGHUP until ctx
// ends or other (the --exit-on-change drain) closes. It returns a channel
// that closes when either the hand-over happened or other closed: the accept
// loop's drain.
func (h *handover) watch(ctx context.Context, other <-chan struct{}) <-chan struct{} {
	// SIGHUP is ours before the old process names us the main one (its
	// target from then on): unhandled, it would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	if err := h.src.Serving(version); err != nil {
		h.log.Logf("warning: %v", err)
	}
	go func() {
		defer signal.Stop(hup)
		tick := time.NewTicker(exePoll)
		defer tick.Stop()
		var tried exeID
		for {
			sighup := false
			select {
			case <-ctx.Done():
				return
			case <-other:
				return
			case <-hup:
				sighup = true
			case <-tick.C:
			}
			cand, err := statExe(h.exe)
			if h.exe == "" || err != nil || (cand.dev == h.self.dev && cand.ino == h.self.ino) {
				continue
			}
			if cand == tried {
				if sighup {
					h.log.Logf("new binary at %s: it failed to take over before; trying again once it changes", h.exe)
				}
				continue
			}
			if h.try(ctx) {
				return
			}
			tried = cand
		}
	}()
	if other == nil {
		return h.done
	}
	merged := make(chan struct{})
	go func() {
		select {
		case <-h.done:
		case <-other:
		case <-ctx.Done():
			return
		}
		close(merged)
	}()
	return merged
}

// blocked says why a hand-over must not be tried here, or "".
func (h *handover) blocked() string {
	if os.Getenv("INVOCATION_ID") != "" && os.Getenv("NOTIFY_SOCKET") == "" {
		// systemd would take our exit for the service's end and stop
		// the new process with it.
		return "the unit does not let serve name its successor to systemd (add NotifyAccess=main to rsync-ssl.service); it serves from the next start of the service"
	}
	return ""
}

// try starts the new binary with our sockets and, once it serves, stops
// accepting. It reports whether the sockets were handed over.
func (h *handover) try(ctx context.Context) bool {
	if why := h.blocked(); why != "" {
		h.log.Logf("new binary at %s: not handed the listening socket: %s", h.exe, why)
		return false
	}
	pid, ver, err := h.startSuccessor(ctx)
	if err != nil {
		h.log.Logf("new binary at %s did not take over: %v; still serving, trying again once it changes", h.exe, err)
		return false
	}
	if err := notifyMainPID(pid); err != nil {
		h.log.Logf("warning: tell systemd that PID %d is the service's main process: %v", pid, err)
	}
	// The successor holds its own copies of the sockets: closing ours
	// stops our accepting, not the listening.
	for _, l := range h.src.Listeners {
		l.Close()
	}
	h.successor, h.version = pid, ver
	h.log.Logf("new binary at %s (version %s): handed the listening socket to PID %d; draining %d sessions", h.exe, ver, pid, h.sessions.Load())
	close(h.done)
	return true
}

// startSuccessor starts the binary at h.exe with our arguments and a copy of
// each listening socket, and waits until it says it serves them. On failure
// the process is stopped and reaped, and the error says how it ended.
func (h *handover) startSuccessor(ctx context.Context) (pid int, ver string, err error) {
	files, val, err := activation.HandoverFiles(h.src.Listeners)
	if err != nil {
		return 0, "", err
	}
	r, w, err := os.Pipe()
	if err != nil {
		closeAll(files)
		return 0, "", fmt.Errorf("ready pipe: %w", err)
	}
	defer r.Close()
	cmd := exec.Command(h.exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), activation.HandoverEnv+"="+val)
	// Its log goes where ours does (journald's stream under systemd).
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	cmd.ExtraFiles = append(files, w)
	err = startWithAmbient(cmd, h.ambient)
	// The child has its copies (or none, having failed to start).
	closeAll(files)
	w.Close()
	if err != nil {
		return 0, "", fmt.Errorf("start: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(io.LimitReader(r, 256)).ReadString('\n')
		ready <- line
	}()
	timer := time.NewTimer(handoverReadyTimeout)
	defer timer.Stop()
	var why error
	select {
	case line := <-ready:
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "serving "); ok {
			return cmd.Process.Pid, v, nil
		}
		why = errors.New("it exited before serving")
	case <-timer.C:
		why = fmt.Errorf("not serving within %v", handoverReadyTimeout)
	case <-ctx.Done():
		why = errors.New("stopping")
	}
	cmd.Process.Kill()
	select {
	case werr := <-exited:
		if werr != nil {
			why = fmt.Errorf("%w (PID %d: %v)", why, cmd.Process.Pid, werr)
		}
	case <-time.After(5 * time.Second):
	}
	return 0, "", why
}

func closeAll(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// startWithAmbient starts cmd from a thread that holds the ambient
// capabilities given (the unit's AmbientCapabilities=, which the kernel keeps
// across execve only in the ambient set). The thread is never returned to
// the pool: it ends with its goroutine, capabilities and all.
func startWithAmbient(cmd *exec.Cmd, ambient []uintptr) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := raiseAmbient(ambient); err != nil {
			errc <- err
			return
		}
		errc <- cmd.Start()
	}()
	return <-errc
}

// notifyMainPID tells systemd that pid is the service's main process now, and
// waits (bounded) until systemd has read it: exiting before that would make
// the service look finished, and systemd would stop the new process too.
func notifyMainPID(pid int) error {
	sent, err := daemon.SdNotify(false, "MAINPID="+strconv.Itoa(pid))
	if err != nil {
		return err
	}
	if !sent {
		return nil // not under systemd: nobody to tell
	}
	return notifyBarrier(5 * time.Second)
}
