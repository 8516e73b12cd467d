package kubernetes

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The README's commands before kubectl, run as written with usher on the
// PATH, leave in $TOKEN the token whose token_sha256 line they print: the
// backup Secret made from $TOKEN holds the token of the caller the
// callers file names.
func TestREADMEMakesTheBackupToken(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	block := regexp.MustCompile("(?s)```sh\n(.*?)```").FindSubmatch(readme)
	if block == nil {
		t.Fatal("README.md has no sh block")
	}
	var script []string
	for _, line := range strings.Split(string(block[1]), "\n") {
		if strings.HasPrefix(line, "kubectl ") {
			if strings.Contains(line, "usher-backup") && !strings.Contains(line, `"$TOKEN"`) {
				t.Fatalf("README.md's usher-backup Secret is not made from $TOKEN: %s", line)
			}
			continue
		}
		script = append(script, line)
	}
	script = append(script, `echo "TOKEN=$TOKEN"`)
	cmd := exec.Command("sh", "-c", strings.Join(script, "\n"))
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(usherBin)+string(os.PathListSeparator)+os.Getenv("PATH"))
	if filepath.Base(usherBin) != "usher" {
		t.Fatalf("%s is not named usher, as the README calls it", usherBin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README.md's commands: %v\n%s", err, out)
	}
	hash := regexp.MustCompile(`(?m)^token_sha256: ([0-9a-f]{64})$`).FindSubmatch(out)
	token := regexp.MustCompile(`(?m)^TOKEN=(.*)$`).FindSubmatch(out)
	if hash == nil || token == nil {
		t.Fatalf("README.md's commands print no token_sha256 line or leave no $TOKEN:\n%s", out)
	}
	if sum := sha256.Sum256(token[1]); len(token[1]) == 0 || hex.EncodeToString(sum[:]) != string(hash[1]) {
		t.Errorf("README.md's commands leave TOKEN=%q, whose hash is not the token_sha256 they print (%s):\n%s", token[1], hash[1], out)
	}
}
