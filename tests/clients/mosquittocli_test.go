package clients

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// clientTimeout bounds every mosquitto_pub/mosquitto_sub run and every wait on their output.
const clientTimeout = 20 * time.Second

const installClients = "scripts/install-test-deps.sh installs the Debian package mosquitto-clients (make test runs it)"

// message is one line mosquitto_sub printed for a received PUBLISH (msgFormat).
type message struct {
	qos    int
	retain bool
	topic  string
	// payload is the text after the topic (payloads in these tests have no newline).
	payload string
}

// msgFormat makes mosquitto_sub print each message as "MSG <qos> <retain> <topic> <payload>",
// which tells it apart from the debug lines (-d) printed on the same output.
const msgFormat = "MSG %q %r %t %p"

// subscriber is a running mosquitto_sub. Its output is read line by line: the debug line for the
// SUBACK closes subscribed, each message line goes to msgs.
type subscriber struct {
	t          testing.TB
	name       string
	cmd        *exec.Cmd
	subscribed chan struct{}
	msgs       chan message
	done       chan struct{} // closed once the process was reaped; err is then set
	err        error

	mu  sync.Mutex
	out strings.Builder // the whole output, for failure messages
}

// brokerArgs are the connection arguments of mosquitto_pub/mosquitto_sub for broker b.
func brokerArgs(b brokerUnderTest, p protocol) []string {
	return []string{"-h", "127.0.0.1", "-p", strconv.Itoa(b.Port()), "-V", string(p)}
}

// startSub starts mosquitto_sub with the broker's address, -d and msgFormat, plus args. It does
// not wait for the SUBACK: see waitSubscribed.
func startSub(t testing.TB, name string, b brokerUnderTest, p protocol, args ...string) *subscriber {
	t.Helper()
	bin := needProgram(t, "mosquitto_sub", installClients)
	all := append(brokerArgs(b, p), "-d", "-F", msgFormat)
	s := &subscriber{t: t, name: name, subscribed: make(chan struct{}), msgs: make(chan message, 10000), done: make(chan struct{})}
	s.cmd = lineBuffered(t, bin, append(all, args...)...)
	pr, pw := io.Pipe()
	s.cmd.Stdout, s.cmd.Stderr = pw, pw
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_sub: %v", err)
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			s.mu.Lock()
			s.out.WriteString(line + "\n")
			s.mu.Unlock()
			switch {
			case strings.Contains(line, "received SUBACK"):
				once.Do(func() { close(s.subscribed) })
			case strings.HasPrefix(line, "MSG "):
				if m, ok := parseMessage(line); ok {
					s.msgs <- m
				}
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	go func() {
		err := s.cmd.Wait()
		pw.Close()
		readers.Wait()
		s.err = err
		close(s.done)
	}()
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("--- %s (mosquitto_sub %s) output ---\n%s", name, strings.Join(args, " "), tail(s.output(), 30))
		}
	})
	return s
}

func parseMessage(line string) (message, bool) {
	f := strings.SplitN(line, " ", 5)
	if len(f) < 4 {
		return message{}, false
	}
	qos, err1 := strconv.Atoi(f[1])
	retain, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil {
		return message{}, false
	}
	m := message{qos: qos, retain: retain == 1, topic: f[3]}
	if len(f) == 5 {
		m.payload = f[4]
	}
	return m, true
}

func (s *subscriber) output() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.out.String()
}

func (s *subscriber) kill() { s.signal(syscall.SIGKILL) }

func (s *subscriber) signal(sig syscall.Signal) {
	select {
	case <-s.done:
		return
	default:
	}
	_ = s.cmd.Process.Signal(sig)
	<-s.done
}

// waitSubscribed waits until the broker answered the SUBSCRIBE (the subscription exists).
func (s *subscriber) waitSubscribed() {
	s.t.Helper()
	select {
	case <-s.subscribed:
	case <-s.done:
		s.t.Fatalf("%s: mosquitto_sub ended before its SUBACK (%v):\n%s", s.name, s.err, s.output())
	case <-time.After(clientTimeout):
		s.t.Fatalf("%s: no SUBACK within %s:\n%s", s.name, clientTimeout, s.output())
	}
}

// next returns the next message, failing the test when none comes within clientTimeout or the
// process ends first.
func (s *subscriber) next() message {
	s.t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case <-time.After(clientTimeout):
		s.t.Fatalf("%s: no message within %s", s.name, clientTimeout)
	case <-s.done:
		select { // the last messages were queued before the process ended
		case m := <-s.msgs:
			return m
		default:
		}
		s.t.Fatalf("%s: mosquitto_sub ended (%v) before the next message", s.name, s.err)
	}
	return message{}
}

// collect returns the next n messages.
func (s *subscriber) collect(n int) []message {
	s.t.Helper()
	out := make([]message, 0, n)
	for len(out) < n {
		out = append(out, s.next())
	}
	return out
}

// wait waits for mosquitto_sub to end by itself (-C, -E, -W) and fails the test unless it exited 0.
func (s *subscriber) wait() {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(clientTimeout):
		s.t.Fatalf("%s: mosquitto_sub still running after %s", s.name, clientTimeout)
	}
	if s.err != nil {
		s.t.Fatalf("%s: mosquitto_sub: %v\n%s", s.name, s.err, s.output())
	}
}

// readUntil returns the messages up to the one whose payload is marker, which it leaves out.
func (s *subscriber) readUntil(marker string) []message {
	s.t.Helper()
	var out []message
	for {
		m := s.next()
		if m.payload == marker {
			return out
		}
		out = append(out, m)
	}
}

// drop ends mosquitto_sub with SIGKILL once its SUBACK came: the connection drops, the session
// stays. Not SIGINT: mosquitto_sub 2.0.11 calls mosquitto_disconnect from its signal handler and
// can deadlock there (seen: SIGINT blocked, the process waiting on a futex for ever). A PUBACK it
// had queued may be lost with it, so the broker may send that QoS 1 message again (at least once).
func (s *subscriber) drop() {
	s.t.Helper()
	s.waitSubscribed()
	s.kill()
}

// drained fails the test when messages beyond those read are left.
func (s *subscriber) drained() {
	s.t.Helper()
	select {
	case m := <-s.msgs:
		s.t.Errorf("%s: unexpected extra message %+v", s.name, m)
	default:
	}
}

// lineBuffered is the command bin args under stdbuf -oL: the clients print their debug lines
// (the SUBACK, the CONNACK) with stdio, which a pipe would hold back until the buffer fills.
func lineBuffered(t testing.TB, bin string, args ...string) *exec.Cmd {
	t.Helper()
	stdbuf := needProgram(t, "stdbuf", "install coreutils")
	return exec.Command(stdbuf, append([]string{"-oL", bin}, args...)...)
}

// publish runs mosquitto_pub with the broker's address plus args, one message per line of lines
// (with -l) when lines is not empty, and fails the test unless it exits 0.
func publish(t testing.TB, b brokerUnderTest, p protocol, lines []string, args ...string) {
	t.Helper()
	bin := needProgram(t, "mosquitto_pub", installClients)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	all := append(brokerArgs(b, p), args...)
	if len(lines) > 0 {
		all = append(all, "-l")
	}
	cmd := exec.CommandContext(ctx, bin, all...)
	if len(lines) > 0 {
		cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mosquitto_pub %s: %v\n%s", strings.Join(all, " "), err, out)
	}
}

// publisher is a mosquitto_pub -l that stays connected, reading messages from its stdin.
type publisher struct {
	t         testing.TB
	cmd       *exec.Cmd
	stdin     io.WriteCloser
	connected chan struct{}
	done      chan struct{}
	err       error
	mu        sync.Mutex
	out       strings.Builder
}

// startPublisher starts mosquitto_pub -l -d plus args and waits for its CONNACK.
func startPublisher(t testing.TB, b brokerUnderTest, p protocol, args ...string) *publisher {
	t.Helper()
	bin := needProgram(t, "mosquitto_pub", installClients)
	all := append(append(brokerArgs(b, p), "-l", "-d"), args...)
	pub := &publisher{t: t, connected: make(chan struct{}), done: make(chan struct{})}
	pub.cmd = lineBuffered(t, bin, all...)
	stdin, err := pub.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pub.stdin = stdin
	pr, pw := io.Pipe()
	pub.cmd.Stdout, pub.cmd.Stderr = pw, pw
	if err := pub.cmd.Start(); err != nil {
		t.Fatalf("start mosquitto_pub: %v", err)
	}
	var readers sync.WaitGroup
	readers.Add(1)
	go func() {
		defer readers.Done()
		sc := bufio.NewScanner(pr)
		var once sync.Once
		for sc.Scan() {
			line := sc.Text()
			pub.mu.Lock()
			pub.out.WriteString(line + "\n")
			pub.mu.Unlock()
			if strings.Contains(line, "received CONNACK (0)") {
				once.Do(func() { close(pub.connected) })
			}
		}
	}()
	go func() {
		err := pub.cmd.Wait()
		pw.Close()
		readers.Wait()
		pub.err = err
		close(pub.done)
	}()
	t.Cleanup(func() {
		_ = pub.cmd.Process.Kill()
		<-pub.done
		if t.Failed() {
			pub.mu.Lock()
			t.Logf("--- mosquitto_pub %s output ---\n%s", strings.Join(args, " "), tail(pub.out.String(), 30))
			pub.mu.Unlock()
		}
	})
	select {
	case <-pub.connected:
	case <-pub.done:
		t.Fatalf("mosquitto_pub ended before its CONNACK: %v", pub.err)
	case <-time.After(clientTimeout):
		t.Fatalf("mosquitto_pub: no CONNACK within %s", clientTimeout)
	}
	return pub
}

// closeStdin ends the input: mosquitto_pub sends DISCONNECT (reason 0x00) and exits; it waits
// for the exit and fails the test unless it is 0.
func (p *publisher) closeStdin() {
	p.t.Helper()
	_ = p.stdin.Close()
	select {
	case <-p.done:
	case <-time.After(clientTimeout):
		p.t.Fatalf("mosquitto_pub still running %s after its input closed", clientTimeout)
	}
	if p.err != nil {
		p.t.Fatalf("mosquitto_pub: %v", p.err)
	}
}

// kill ends mosquitto_pub with SIGKILL: its connection drops without DISCONNECT.
func (p *publisher) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// seqPayloads are n payloads "<prefix>-0" … "<prefix>-(n-1)".
func seqPayloads(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

// payloads are the payloads of ms in order.
func payloads(ms []message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.payload
	}
	return out
}
