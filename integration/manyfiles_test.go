package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// More files open at once than the daemon may hold descriptors (20,000
// here) or mappings (vm.max_map_count, 65,530): the daemon bounds both and
// keeps serving.

const (
	manyFiles       = 70000
	manyClients     = 4 // 17,500 files each, under a client's own limit
	manyPerDir      = 1000
	manyFilesBudget = 5 * time.Minute
)

func manyName(i int) string {
	return filepath.Join(fmt.Sprintf("d%02d", i/manyPerDir), fmt.Sprintf("f%05d", i))
}

func manyContent(i int) []byte {
	return []byte(fmt.Sprintf("file %d of %d\n", i, manyFiles))
}

// manyFilesClient is a client process of TestManyFilesOpen (the test
// binary run again in roleManyFilesClient, args MNT START END): it opens
// files [START, END) of the mount at MNT read-write, says "opened", waits
// for a line on stdin, reads every file back, rewrites every hundredth and
// reads it again, says "ok" (or what was wrong), and closes them all at
// EOF on stdin.
func manyFilesClient(args []string) int {
	if len(args) != 3 {
		fmt.Printf("bad arguments %q: want MNT START END\n", args)
		return 2
	}
	mnt := args[0]
	start, err1 := strconv.Atoi(args[1])
	end, err2 := strconv.Atoi(args[2])
	if err := errors.Join(err1, err2); err != nil {
		fmt.Printf("bad arguments %q: %v\n", args, err)
		return 2
	}
	files := make([]*os.File, 0, end-start)
	for i := start; i < end; i++ {
		f, err := os.OpenFile(filepath.Join(mnt, manyName(i)), os.O_RDWR, 0)
		if err != nil {
			fmt.Printf("open %d after %d open: %v\n", i, len(files), err)
			return 1
		}
		files = append(files, f)
	}
	fmt.Println("opened", len(files))
	in := bufio.NewReader(os.Stdin)
	if _, err := in.ReadString('\n'); err != nil {
		fmt.Println("stdin:", err)
		return 1
	}
	buf := make([]byte, 64)
	for k, f := range files {
		i := start + k
		want := manyContent(i)
		if k%100 == 0 {
			want = bytes.ToUpper(want)
			if _, err := f.WriteAt(want, 0); err != nil {
				fmt.Printf("write %d: %v\n", i, err)
				return 1
			}
		}
		n, err := f.ReadAt(buf, 0)
		if (err != nil && err != io.EOF) || !bytes.Equal(buf[:n], want) {
			fmt.Printf("read %d: %q, %v; want %q\n", i, buf[:n], err, want)
			return 1
		}
	}
	fmt.Println("ok")
	_, _ = io.Copy(io.Discard, in)
	for _, f := range files {
		if err := f.Close(); err != nil {
			fmt.Println("close:", err)
			return 1
		}
	}
	return 0
}

func countFds(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

func countMaps(pid int) (int, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/maps", pid))
	return bytes.Count(raw, []byte("\n")), err
}

func TestManyFilesOpen(t *testing.T) {
	t.Parallel()
	skipIfLoopback(t)
	if testing.Short() {
		t.Skip("70,000 files: not in -short")
	}
	store := t.TempDir()
	for i := 0; i < manyFiles; i++ {
		if i%manyPerDir == 0 {
			if err := os.Mkdir(filepath.Join(store, filepath.Dir(manyName(i))), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(store, manyName(i)), manyContent(i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := startMountAt(t, store, t.TempDir())
	type client struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Scanner
	}
	clients := make([]*client, manyClients)
	per := manyFiles / manyClients
	deadline := time.Now().Add(manyFilesBudget)
	for c := range clients {
		cmd := roleCommand(testBinary, roleManyFilesClient, m.mnt, strconv.Itoa(c*per), strconv.Itoa((c+1)*per))
		cmd.Stderr = os.Stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cl := &client{cmd: cmd, stdin: stdin, out: bufio.NewScanner(stdout)}
		clients[c] = cl
		t.Cleanup(func() {
			cl.stdin.Close()
			done := make(chan error, 1)
			go func() { done <- cl.cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("client: %v", err)
				}
			case <-time.After(time.Until(deadline) + 30*time.Second):
				cl.cmd.Process.Kill()
				<-done
				t.Errorf("client did not exit")
			}
		})
	}
	expect := func(c *client, prefix string) {
		t.Helper()
		got := make(chan string, 1)
		go func() {
			if c.out.Scan() {
				got <- c.out.Text()
			} else {
				got <- fmt.Sprintf("(no output: %v)", c.out.Err())
			}
		}()
		select {
		case line := <-got:
			if !strings.HasPrefix(line, prefix) {
				t.Fatalf("client said %q, want %q", line, prefix)
			}
		case <-time.After(time.Until(deadline)):
			t.Fatalf("client silent past the time budget, waiting for %q", prefix)
		}
	}
	for _, c := range clients {
		expect(c, "opened "+strconv.Itoa(per))
	}

	// All 70,000 open at once: the daemon stays within its bounds.
	fds, err := countFds(m.pid())
	if err != nil {
		t.Fatal(err)
	}
	maps, err := countMaps(m.pid())
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Mappings  int64 `json:"mappings"`
		OpenBlobs int   `json:"open_blobs"`
	}
	raw, err := os.ReadFile(filepath.Join(m.mnt, statsFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d files open through %d clients: daemon has %d descriptors, %d mappings in /proc/PID/maps; stats: %d mappings, %d open blobs", manyFiles, manyClients, fds, maps, s.Mappings, s.OpenBlobs)
	if fds >= 20000 || s.Mappings > 8192 || maps >= 65530 {
		t.Errorf("daemon out of bounds: %d descriptors, %d blob mappings, %d maps", fds, s.Mappings, maps)
	}
	if s.OpenBlobs < manyFiles {
		t.Errorf("open blobs %d, want at least %d", s.OpenBlobs, manyFiles)
	}

	// Every client reads its files back (and rewrites some) while all
	// stay open.
	for _, c := range clients {
		if _, err := io.WriteString(c.stdin, "go\n"); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range clients {
		expect(c, "ok")
	}
	for _, c := range clients {
		c.stdin.Close()
	}
	for c := 0; c < manyClients; c++ {
		i := c * per
		checkContent(t, filepath.Join(store, manyName(i)), bytes.ToUpper(manyContent(i)))
	}
	readStats(t, m) // still serving
}
