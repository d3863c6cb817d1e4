package tests

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"
)

// helpFlagRE matches a flag line of "rsync-ssl-shim CMD --help": an indented
// line that starts with the flag's name.
var helpFlagRE = regexp.MustCompile(`(?m)^\s+(--[a-z0-9][a-z0-9-]*)`)

// manFlagRE matches a flag as the man page sets it in bold: \-\-name.
var manFlagRE = regexp.MustCompile(`\\-\\-([a-z0-9][a-z0-9\\-]*)`)

// manSections splits the roff source into its ".SS command" subsections.
func manSections(t *testing.T, src string) map[string]string {
	t.Helper()
	secs := map[string]string{}
	cur := ""
	for _, line := range strings.Split(src, "\n") {
		switch {
		case strings.HasPrefix(line, ".SS "):
			cur = strings.TrimSpace(strings.TrimPrefix(line, ".SS "))
			continue
		case strings.HasPrefix(line, ".SH "):
			cur = ""
		}
		if cur != "" {
			secs[cur] += line + "\n"
		}
	}
	return secs
}

// documentedFlags lists the flags a subsection describes: the ones that head
// a .TP entry (".BI \-\-name ...").
func documentedFlags(sec string) []string {
	var flags []string
	lines := strings.Split(sec, "\n")
	for i := 1; i < len(lines); i++ {
		if strings.TrimSpace(lines[i-1]) != ".TP" {
			continue
		}
		if m := manFlagRE.FindStringSubmatch(lines[i]); m != nil && strings.HasPrefix(strings.Fields(lines[i])[1], `\-\-`) {
			flags = append(flags, "--"+strings.ReplaceAll(m[1], `\-`, "-"))
		}
	}
	sort.Strings(flags)
	return flags
}

// TestDeployManPage checks, for every command, that each flag its --help
// lists is described in rsync-ssl-shim(8) and that the man page describes no
// flag the command does not have.
func TestDeployManPage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "packaging", "rsync-ssl-shim.8"))
	if err != nil {
		t.Fatal(err)
	}
	secs := manSections(t, string(b))
	for _, cmd := range []string{"serve", "connect", "rsync", "check"} {
		t.Run(cmd, func(t *testing.T) {
			sec, ok := secs[cmd]
			if !ok {
				t.Fatalf("rsync-ssl-shim.8 has no .SS %s section", cmd)
			}
			out, _ := runCmd(t, 30*time.Second, nil, shimBin, cmd, "--help")
			var help []string
			seen := map[string]bool{}
			for _, m := range helpFlagRE.FindAllStringSubmatch(out, -1) {
				if !seen[m[1]] && m[1] != "--help" {
					seen[m[1]] = true
					help = append(help, m[1])
				}
			}
			man := documentedFlags(sec)
			if len(help) == 0 {
				// "rsync" passes everything to rsync and has no flags
				// of its own: then the page must document none either.
				if len(man) > 0 {
					t.Fatalf("%s --help lists no flags but the man page documents %v", cmd, man)
				}
				return
			}
			inMan := map[string]bool{}
			for _, f := range man {
				inMan[f] = true
				if !seen[f] {
					t.Errorf("man page documents %s %s, which %s --help does not list", cmd, f, cmd)
				}
			}
			for _, f := range help {
				if !inMan[f] {
					t.Errorf("%s --help lists %s, which the man page does not document under .SS %s", cmd, f, cmd)
				}
			}
		})
	}
}

// TestDeployManPageRenders has man(1) format the page and report any roff
// warning.
func TestDeployManPageRenders(t *testing.T) {
	man := needTool(t, "man")
	out, code := runCmd(t, time.Minute, []string{"MANWIDTH=80", "LC_ALL=C.UTF-8"}, man, "--warnings", "-E", "UTF-8", "-l",
		filepath.Join(repoRoot(t), "packaging", "rsync-ssl-shim.8"))
	if code != 0 || strings.Contains(out, "warning:") || !strings.Contains(out, "rsync-ssl-shim") {
		t.Fatalf("man -l rsync-ssl-shim.8 (exit %d):\n%s", code, out)
	}
}
