//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestLoggerOneLine(t *testing.T) {
	for in, want := range map[string]string{
		"plain text":                           "plain text",
		"two\nlines\n":                         `two\nlines`,
		"x client=host-b\r\x1b[2J":             `x client=host-b\r\x1b[2J`,
		"tab\there\x00nul\x7fdel":              `tab\there\x00nul\x7fdel`,
		"c1 \u009b2J csi":                      `c1 \u009b2J csi`,
		"bad utf-8 \xff\x9b end":               `bad utf-8 \xff\x9b end`,
		"ünïcødé 日本語 kept":                     "ünïcødé 日本語 kept",
		"quote \" and backslash \\ stay as is": "quote \" and backslash \\ stay as is",
	} {
		if got := oneLine(in); got != want {
			t.Errorf("oneLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLoggerBoundsLines(t *testing.T) {
	var buf bytes.Buffer
	l := &logger{w: &buf, prefix: "p: "}
	l.Logf("sni=%s", strings.Repeat("a", 60000))
	l.Logf("ctl=%s", strings.Repeat("\x1b", 60000))
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want 2 lines, got %d", len(lines))
	}
	for _, line := range lines {
		if len(line) > maxLogLine+64 || !strings.HasSuffix(line, "...(cut, 60004 bytes)") {
			t.Errorf("line of %d bytes ending %q", len(line), line[max(0, len(line)-40):])
		}
	}
}

func FuzzOneLine(f *testing.F) {
	f.Add("x client=host-b\r\x1b[2J")
	f.Add("ünï \xff\xc2\x9b")
	f.Fuzz(func(t *testing.T, s string) {
		got := oneLine(s)
		if len(got) > maxLogLine+64 {
			t.Fatalf("line of %d bytes", len(got))
		}
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 in %q", got)
		}
		for _, r := range got {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
				t.Fatalf("control %U in %q", r, got)
			}
		}
	})
}
