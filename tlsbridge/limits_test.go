package tlsbridge

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/rsync-ssl-shim/rsync-ssl-shim/internal/testpki"
)

type answerErr struct{}

func (answerErr) Error() string {
	return "max connections (3) reached -- try again later (from 192.0.2.1)"
}
func (answerErr) Answer() string { return "max connections (3) reached -- try again later" }

func refusalServer(t *testing.T) *Server {
	t.Helper()
	ca := testpki.NewCA(t, t.TempDir(), "limits test CA", nil)
	_, cert := ca.ServerLeaf(t, time.Now().Add(-time.Hour), time.Now().Add(time.Hour), "localhost")
	return &Server{
		TLS:              &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		HandshakeTimeout: 5 * time.Second,
		DataPathMode:     DataPathBridge,
		Logf:             func(string, ...any) {},
	}
}

func acceptOne(t *testing.T) (server net.Conn, addr string, dial func() net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var c net.Conn
	dial = func() net.Conn {
		c, err = net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	cl := dial()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return s, ln.Addr().String(), func() net.Conn { return cl }
}

// TestServeAdmittedRefusal: a session refused by Admit after its handshake
// is told rsync's @ERROR line (the error's Answer, not the log's text) in
// its protocol, without rsync; cut short (no refusal budget left), it is
// over well within a second even when the client never sends its module
// line, and Admit's release is called either way.
func TestServeAdmittedRefusal(t *testing.T) {
	for _, cut := range []bool{false, true} {
		s := refusalServer(t)
		srv, _, client := acceptOne(t)
		released := make(chan struct{})
		in := Intake{AcceptedAt: time.Now(), Admit: func(context.Context) (func(), error) {
			if cut {
				return nil, answerErr{}
			}
			return func() { close(released) }, answerErr{}
		}}
		done := make(chan Result, 1)
		start := time.Now()
		go func() { done <- s.ServeAdmitted(context.Background(), srv, in) }()
		tc := tls.Client(client(), &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := tc.Write([]byte("@RSYNCD: 31.0\n")); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(tc)
		var got []string
		for {
			l, err := br.ReadString('\n')
			if l != "" {
				got = append(got, strings.TrimSpace(l))
			}
			if err != nil {
				break
			}
		}
		res := <-done
		if len(got) != 2 || got[0] != "@RSYNCD: 31.0" || got[1] != "@ERROR: max connections (3) reached -- try again later" {
			t.Errorf("cut short %v: client read %q", cut, got)
		}
		var re *RefusedError
		if !errors.As(res.Err, &re) || !strings.Contains(res.Err.Error(), "(from 192.0.2.1)") || res.RsyncExit != -1 {
			t.Errorf("cut short %v: result %v (rsync exit %d)", cut, res.Err, res.RsyncExit)
		}
		if d := time.Since(start); cut && d > 1500*time.Millisecond || d > 5*time.Second {
			t.Errorf("cut short %v: refusal took %v", cut, d)
		}
		if !cut {
			select {
			case <-released:
			case <-time.After(time.Second):
				t.Error("Admit's release was not called")
			}
		}
	}
}

// TestServeAdmittedDeadlineFromAccept: the handshake bound counts from
// Intake.AcceptedAt, not from the call: a connection accepted 4.9 s ago
// with a 5 s bound is given 0.1 s more.
func TestServeAdmittedDeadlineFromAccept(t *testing.T) {
	s := refusalServer(t)
	srv, _, _ := acceptOne(t)
	admitted := false
	in := Intake{AcceptedAt: time.Now().Add(-4900 * time.Millisecond), Admit: func(context.Context) (func(), error) {
		admitted = true
		return nil, nil
	}}
	start := time.Now()
	res := s.ServeAdmitted(context.Background(), srv, in)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("silent client held %v, want about 0.1 s (the rest of the bound from accept)", d)
	}
	if res.Err == nil || admitted {
		t.Fatalf("silent client: %v, admitted %v", res.Err, admitted)
	}
}
