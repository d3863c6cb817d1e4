package tests

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestTLSPolicySSLScan scans the server with sslscan: only TLS 1.2 and 1.3,
// every accepted suite forward-secret (ECDHE, or TLS 1.3) and AEAD, no
// compression, no insecure renegotiation.
func TestTLSPolicySSLScan(t *testing.T) {
	sslscan := needTool(t, "sslscan")
	rsync := rsyncPath(t)
	p := newPKI(t)
	rd := newRsyncd(t)
	s := startServeListening(t, serveArgs(p, rd, rsync))
	start := time.Now()
	out, code := runCmd(t, 3*time.Minute, nil, sslscan, "--no-colour", "--no-heartbleed", fmt.Sprintf("127.0.0.1:%d", s.Port))
	took := time.Since(start)
	if code != 0 {
		t.Fatalf("sslscan exit %d:\n%s", code, out)
	}
	t.Logf("sslscan:\n%s", out)
	var findings []string
	for _, want := range []string{"SSLv2     disabled", "SSLv3     disabled", "TLSv1.0   disabled", "TLSv1.1   disabled", "TLSv1.2   enabled", "TLSv1.3   enabled"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(want) + `\s*$`).MatchString(out) {
			t.Errorf("sslscan does not say %q", want)
		}
	}
	compression := "compression disabled (sslscan)"
	if !strings.Contains(out, "Compression disabled") {
		// Debian's sslscan is built without zlib and cannot test it; ask
		// the server directly with a hello that offers only DEFLATE.
		if !strings.Contains(out, "does not support compression") {
			t.Errorf("sslscan says nothing about compression")
		}
		ans := rawClient(deflateOnlyHello(), 0, false)(t, fmt.Sprintf("127.0.0.1:%d", s.Port))
		if len(ans) < 7 || ans[0] != 0x15 {
			t.Errorf("a DEFLATE-only hello was not refused with an alert: % x", ans)
		}
		compression = "compression refused (a DEFLATE-only ClientHello gets an alert; sslscan's OpenSSL lacks zlib)"
	}
	if strings.Contains(out, "Insecure session renegotiation supported") {
		t.Errorf("insecure renegotiation is supported")
	}
	// "Accepted  TLSv1.2  128 bits  ECDHE-ECDSA-AES128-GCM-SHA256  Curve 25519 DHE 253"
	accepted := regexp.MustCompile(`(?m)^(Preferred|Accepted)\s+(TLSv1\.[0-3]|SSLv[23])\s+\d+ bits\s+(\S+)`)
	var suites []string
	for _, m := range accepted.FindAllStringSubmatch(out, -1) {
		ver, name := m[2], m[3]
		suites = append(suites, ver+" "+name)
		switch {
		case ver != "TLSv1.2" && ver != "TLSv1.3":
			t.Errorf("suite %s accepted with %s", name, ver)
		case ver == "TLSv1.3":
		case !strings.HasPrefix(name, "ECDHE-"):
			t.Errorf("TLS 1.2 suite %s is not forward-secret (no ECDHE)", name)
		case !strings.Contains(name, "GCM") && !strings.Contains(name, "CHACHA20-POLY1305"):
			t.Errorf("TLS 1.2 suite %s is not AEAD", name)
		}
	}
	if len(suites) == 0 {
		t.Fatal("sslscan listed no accepted suite")
	}
	reneg := "renegotiation not supported"
	if m := regexp.MustCompile(`(?m)^(\S.*renegotiation.*)$`).FindString(out); m != "" {
		reneg = strings.TrimSpace(m)
	}
	findings = append(findings, "protocols: TLSv1.2, TLSv1.3 only", compression, reneg)
	record(t, "TLS configuration (sslscan, default policy)", "sslscan", "sslscan against serve --listen",
		strings.Join(findings, "; ")+"; accepted: "+strings.Join(suites, ", "), 3*time.Minute, took)
}

// deflateOnlyHello is a TLS 1.2 ClientHello whose only compression method
// is DEFLATE (1).
func deflateOnlyHello() []byte {
	h := helloRecord(0x0303)
	// helloRecord ends with the compression list "01 00" (one method,
	// null); make it "01 01".
	h[len(h)-1] = 1
	return h
}
