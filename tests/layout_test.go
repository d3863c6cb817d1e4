package tests

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLayoutArrows checks the package layout of docs/architecture.md with the import
// graph go list reports (non-test imports): main reaches the server and the
// client; the server and the client reach only the leaves; nothing points
// back up or sideways. A change that makes the server import the client, or
// the client import Linux-only code, fails here.
func TestLayoutArrows(t *testing.T) {
	const mod = "github.com/rsync-ssl-shim/rsync-ssl-shim"
	goBin := needTool(t, "go")
	cmd := exec.Command(goBin, "list", "-deps=false", "-json", "./...")
	cmd.Dir = repoRoot(t)
	timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	imports := map[string][]string{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		imports[strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, mod), "/")] = p.Imports
	}
	// allowed lists, for each package, the project packages and the
	// outside modules it may import; the standard library is always fine.
	allowed := map[string][]string{
		"":                               {"activation", "tlsbridge", "tlsbridge/client", "tlsbridge/rsyncd", "tlsbridge/certid", "tlsbridge/tlserr", "tlsbridge/runas", "github.com/coreos/go-systemd/v22", "golang.org/x/sys"},
		"activation":                     {"github.com/coreos/go-systemd/v22", "golang.org/x/sys"},
		"tlsbridge":                      {"tlsbridge/rsyncd", "tlsbridge/certid", "tlsbridge/tlserr", "tlsbridge/batchconn", "tlsbridge/ktls", "golang.org/x/sys"},
		"tlsbridge/client":               {"tlsbridge/certid", "tlsbridge/tlserr", "tlsbridge/batchconn", "tlsbridge/ktls", "golang.org/x/sys"},
		"tlsbridge/batchconn":            {},
		"tlsbridge/ktls":                 {"golang.org/x/sys"},
		"tlsbridge/rsyncd":               {},
		"tlsbridge/certid":               {},
		"tlsbridge/tlserr":               {},
		"tlsbridge/runas":                {"golang.org/x/sys"},
		"internal/testpki":               {},
		"tests":                          {"internal/testpki"},
		"tests/testdata/rsync-inet-only": {},
		"tests/bench/tlsref":             {},
	}
	for pkg, imps := range imports {
		ok, known := allowed[pkg]
		if !known {
			t.Errorf("package %q is not in the layout: add it to docs/architecture.md's table and to this test", pkg)
			continue
		}
		for _, imp := range imps {
			if !strings.Contains(strings.SplitN(imp, "/", 2)[0], ".") {
				continue // standard library
			}
			rel := strings.TrimPrefix(strings.TrimPrefix(imp, mod), "/")
			fine := false
			for _, a := range ok {
				if rel == a || strings.HasPrefix(imp, a+"/") || imp == a {
					fine = true
				}
			}
			if !fine {
				t.Errorf("%s imports %s: the layout does not allow that arrow", orMain(pkg), imp)
			}
		}
	}
}

func orMain(p string) string {
	if p == "" {
		return "main"
	}
	return p
}
