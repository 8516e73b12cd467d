package etcdtest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// logTailLines is how much of a member's log a failed test shows: enough for
// the last election and the errors around it.
const logTailLines = 60

// member is one etcd process of a cluster, with what it keeps across
// restarts: its name, data dir, ports and log file.
type member struct {
	name      string
	dataDir   string
	logPath   string
	clientURL string
	peerURL   string
	peerAddr  string
	args      []string

	proc *process // nil until started; the last process otherwise
}

// process is one run of a member, replaced by the next on restart.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once err is set
	err    error         // what cmd.Wait returned
}

func newMember(dir string, i, clientPort, peerPort int) *member {
	name := "m" + strconv.Itoa(i)
	peerAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(peerPort))
	return &member{
		name:      name,
		dataDir:   filepath.Join(dir, name),
		logPath:   filepath.Join(dir, name+".log"),
		clientURL: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(clientPort)),
		peerURL:   "http://" + peerAddr,
		peerAddr:  peerAddr,
	}
}

// flags are the member's etcd flags, the same on every start: etcd reads the
// initial cluster only when its data dir is empty and ignores it afterwards.
func (m *member) flags(initialCluster, token string, opts Options) []string {
	quota := int64(QuotaBackendBytes)
	if opts.QuotaBackendBytes > 0 {
		quota = opts.QuotaBackendBytes
	}
	requestBytes := MaxRequestBytes
	if opts.MaxRequestBytes > 0 {
		requestBytes = min(requestBytes, opts.MaxRequestBytes)
	}
	flags := []string{
		"--name=" + m.name,
		"--data-dir=" + m.dataDir,
		"--listen-client-urls=" + m.clientURL,
		"--advertise-client-urls=" + m.clientURL,
		"--listen-peer-urls=" + m.peerURL,
		"--initial-advertise-peer-urls=" + m.peerURL,
		"--initial-cluster=" + initialCluster,
		"--initial-cluster-state=new",
		"--initial-cluster-token=" + token,
		// A tenth of the defaults: a lost leader is replaced in about a
		// second, and loopback answers a heartbeat well within 50 ms even on
		// a busy machine.
		"--heartbeat-interval=50",
		"--election-timeout=500",
		"--max-txn-ops=" + strconv.Itoa(MaxTxnOps),
		"--max-request-bytes=" + strconv.Itoa(requestBytes),
		"--quota-backend-bytes=" + strconv.FormatInt(quota, 10),
		"--logger=zap",
		"--log-outputs=stderr",
		"--log-level=info",
		// A failed test prints the log for a person to read.
		"--log-format=console",
	}
	if !opts.Durable {
		// The members are killed, never the machine: what a killed process
		// wrote is in the page cache and survives it, so fsync would only
		// slow the tests on a shared disk without making them prove more.
		flags = append(flags, "--unsafe-no-fsync")
	}
	return flags
}

// start starts a process of the member, its output appended to its log.
func (m *member) start(bin string) error {
	if m.running() {
		return fmt.Errorf("%s is already running", m.name)
	}
	log, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	fmt.Fprintf(log, "--- etcdtest: starting %s at %s\n", m.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, m.args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", m.name, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	m.proc = p
	return nil
}

func (m *member) running() bool {
	if m.proc == nil {
		return false
	}
	select {
	case <-m.proc.exited:
		return false
	default:
		return true
	}
}

// exitErr is how the last process exited, or nil while it runs.
func (m *member) exitErr() error {
	if m.running() || m.proc == nil {
		return nil
	}
	return m.proc.err
}

func (m *member) kill() error {
	if !m.running() {
		return fmt.Errorf("kill %s: not running", m.name)
	}
	if err := m.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", m.name, err)
	}
	select {
	case <-m.proc.exited:
		return nil
	case <-time.After(stopTimeout):
		return fmt.Errorf("kill %s: still running %v after SIGKILL", m.name, stopTimeout)
	}
}

func (m *member) stop(timeout time.Duration) error {
	if !m.running() {
		return fmt.Errorf("stop %s: not running", m.name)
	}
	if err := m.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("stop %s: %w", m.name, err)
	}
	select {
	case <-m.proc.exited:
		return nil
	case <-time.After(timeout):
	}
	if err := m.kill(); err != nil {
		return err
	}
	return fmt.Errorf("stop %s: still running %v after SIGTERM, killed", m.name, timeout)
}

// waitListening waits until the member accepts connections on its peer
// port, which etcd binds before reading its data dir: from then on its ports
// are its own. It fails at once if the process exits, with the log's end.
func (m *member) waitListening(ctx context.Context) error {
	for {
		conn, err := net.DialTimeout("tcp", m.peerAddr, 200*time.Millisecond)
		if err == nil {
			return conn.Close()
		}
		if !m.running() {
			return fmt.Errorf("%s exited (%v) before listening on %s; its log ends:\n%s",
				m.name, m.exitErr(), m.peerAddr, m.logTail(logTailLines))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not listening on %s: %w", m.name, m.peerAddr, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logTail returns the last n lines of the member's log.
func (m *member) logTail(n int) string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = append([][]byte{[]byte(fmt.Sprintf("(%d earlier lines in the file)", len(lines)-n))}, lines[len(lines)-n:]...)
	}
	return string(bytes.Join(lines, []byte("\n")))
}
