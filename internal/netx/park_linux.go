//go:build linux

package netx

import (
	"container/heap"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Parker is described in park.go. On Linux it is an epoll instance put
// in the runtime poller (the instance's own descriptor is readable when
// any parked socket is ready), a deadline heap whose earliest deadline is
// the read deadline of that descriptor, and one goroutine.
type Parker struct {
	file  *os.File
	rc    syscall.RawConn
	epfd  int
	epoch time.Time
	done  chan struct{}

	mu sync.Mutex
	// slots are the parked connections; an event carries its slot and
	// the generation of the park (gen counts parks), so an event read
	// just before its connection was woken otherwise never wakes the
	// slot's next occupant.
	slots []parkSlot
	free  []int32
	gen   uint32
	// timers is a min-heap of parked connections by deadline.
	timers timerHeap
	// nearest is the deadline file is set to (0: none, -1: unknown,
	// set it again).
	nearest int64
	closed  bool
}

type parkSlot struct {
	p   *Parked
	gen uint32
}

// parkEvents is the readiness a parked socket waits for: input, or the
// peer closing (RDHUP; HUP and ERR are always reported). One-shot: the
// socket reports once, then stays registered but silent until parked
// again.
const parkEvents = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT

// NewParker makes a parker and starts its goroutine; Close stops it.
func NewParker() (*Parker, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("netx: epoll_create1: %w", err)
	}
	// Non-blocking, so os.NewFile puts it in the runtime poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("netx: parker: %w", err)
	}
	f := os.NewFile(uintptr(epfd), "parker")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("netx: parker: %w", err)
	}
	p := &Parker{file: f, rc: rc, epfd: epfd, epoch: time.Now(), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// Park registers the socket of rc: w.Wake is called once when the socket
// is readable or its peer closed, when deadline passes (zero: never), or
// when Wake(e) is called. The caller must have nothing of the socket's
// input buffered (it would never be reported) and must not read the
// socket until woken.
func (p *Parker) Park(rc syscall.RawConn, e *Parked, deadline time.Time, w Waker) error {
	var perr error
	if err := rc.Control(func(fd uintptr) { perr = p.park(int(fd), e, deadline, w) }); err != nil {
		return fmt.Errorf("netx: park: %w", err)
	}
	return perr
}

func (p *Parker) park(fd int, e *Parked, deadline time.Time, w Waker) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrParkerClosed
	}
	if e.slot != 0 {
		return errParked
	}
	s := p.alloc(e)
	ev := unix.EpollEvent{Events: parkEvents, Fd: s, Pad: int32(p.slots[s].gen)}
	op := unix.EPOLL_CTL_ADD
	if e.armed && e.fd == int32(fd) {
		op = unix.EPOLL_CTL_MOD
	}
	err := unix.EpollCtl(p.epfd, op, fd, &ev)
	switch {
	case err == unix.ENOENT && op == unix.EPOLL_CTL_MOD:
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
	case err == unix.EEXIST && op == unix.EPOLL_CTL_ADD:
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
	}
	if err != nil {
		p.release(e)
		return fmt.Errorf("netx: park: epoll_ctl: %w", err)
	}
	e.armed, e.fd, e.w = true, int32(fd), w
	e.deadline = 0
	if !deadline.IsZero() {
		e.deadline = max(1, int64(deadline.Sub(p.epoch)))
		p.push(e)
		if p.timers[0] == e {
			p.setDeadline()
		}
	}
	return nil
}

// Wake takes e out of the parker and calls its Waker, unless it is not
// parked (it was woken already): it reports whether it did.
func (p *Parker) Wake(e *Parked) bool {
	p.mu.Lock()
	if e.slot == 0 {
		p.mu.Unlock()
		return false
	}
	p.disarm(e)
	w := p.release(e)
	p.mu.Unlock()
	w.Wake()
	return true
}

// Len returns the number of parked connections.
func (p *Parker) Len() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.slots) - len(p.free)
}

// Close wakes every parked connection, stops the parker's goroutine and
// closes the epoll instance; Park fails from then on.
func (p *Parker) Close() error {
	if !p.shutdown() {
		return nil
	}
	err := p.file.Close()
	<-p.done
	return err
}

// shutdown marks the parker closed and wakes every parked connection;
// it reports false if the parker was closed already.
func (p *Parker) shutdown() bool {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return false
	}
	p.closed = true
	var wake []Waker
	for _, s := range p.slots {
		if s.p != nil {
			p.disarm(s.p)
			wake = append(wake, p.release(s.p))
		}
	}
	p.mu.Unlock()
	for _, w := range wake {
		w.Wake()
	}
	return true
}

// run waits for ready sockets and deadlines, and wakes their connections.
func (p *Parker) run() {
	defer close(p.done)
	events := make([]unix.EpollEvent, 128)
	var n int
	var werr error
	wait := func(fd uintptr) bool {
		// Timeout 0 never blocks: a raw system call, as netx's reads and
		// writes (see conn.go), so the scheduler never hands the P away.
		r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, fd, uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
		n, werr = int(r), nil
		switch errno {
		case 0:
		case unix.EINTR:
			n = 0
		default:
			n, werr = 0, errno
		}
		return n > 0 || werr != nil
	}
	var wake []Waker
	for {
		err := p.rc.Read(wait)
		timedOut := errors.Is(err, os.ErrDeadlineExceeded)
		if err != nil && !timedOut {
			return // closed
		}
		if werr != nil {
			// Not expected of a valid epoll descriptor: rather than spin,
			// stop parking and hand every parked connection back.
			p.shutdown()
			return
		}
		p.mu.Lock()
		for i := range events[:n] {
			ev := &events[i]
			s := ev.Fd
			if s < 0 || int(s) >= len(p.slots) || p.slots[s].gen != uint32(ev.Pad) || p.slots[s].p == nil {
				continue // its connection was woken otherwise since
			}
			// One-shot: the socket stays registered, silent, so the
			// next Park only modifies it.
			wake = append(wake, p.release(p.slots[s].p))
		}
		n = 0
		if len(p.timers) > 0 {
			now := int64(time.Since(p.epoch))
			for len(p.timers) > 0 && p.timers[0].deadline <= now {
				e := p.timers[0]
				p.disarm(e)
				wake = append(wake, p.release(e))
			}
		}
		if timedOut {
			p.nearest = -1
		}
		p.setDeadline()
		p.mu.Unlock()
		for i, w := range wake {
			w.Wake()
			wake[i] = nil
		}
		wake = wake[:0]
	}
}

// alloc gives e a slot; the caller holds mu.
func (p *Parker) alloc(e *Parked) int32 {
	var s int32
	if k := len(p.free); k > 0 {
		s = p.free[k-1]
		p.free = p.free[:k-1]
	} else {
		s = int32(len(p.slots))
		p.slots = append(p.slots, parkSlot{})
	}
	p.gen++
	p.slots[s] = parkSlot{p: e, gen: p.gen}
	e.slot, e.heap = s+1, -1
	return s
}

// release takes e out of its slot and the deadline heap and returns its
// Waker; the caller holds mu.
func (p *Parker) release(e *Parked) Waker {
	s := e.slot - 1
	p.slots[s].p = nil
	p.free = append(p.free, s)
	e.slot = 0
	if e.heap >= 0 {
		p.remove(int(e.heap))
	}
	if len(p.free) == len(p.slots) && cap(p.slots) > 1024 {
		// Nothing parked after a crowd: give the tables back.
		p.slots, p.free = nil, nil
	}
	w := e.w
	e.w = nil
	return w
}

// disarm takes e's socket out of the epoll set (an event already read
// for it is ignored: its park is over); the caller holds mu.
func (p *Parker) disarm(e *Parked) {
	if e.armed {
		// An error means the socket was closed, which removed it already.
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(e.fd), nil)
		e.armed = false
	}
}

// setDeadline sets file's read deadline to the earliest parked deadline;
// the caller holds mu.
func (p *Parker) setDeadline() {
	var want int64
	if len(p.timers) > 0 {
		want = p.timers[0].deadline
	}
	if want == p.nearest {
		return
	}
	p.nearest = want
	var t time.Time
	if want != 0 {
		t = p.epoch.Add(time.Duration(want))
	}
	_ = p.file.SetReadDeadline(t)
}

// timerHeap is the parked connections with a deadline, earliest first
// (container/heap); each knows its index (Parked.heap) so that a
// connection woken otherwise leaves it at once. The caller holds mu.
type timerHeap []*Parked

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].deadline < h[j].deadline }
func (h timerHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heap, h[j].heap = int32(i), int32(j)
}
func (h *timerHeap) Push(x any) {
	e := x.(*Parked)
	e.heap = int32(len(*h))
	*h = append(*h, e)
}
func (h *timerHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	e.heap = -1
	return e
}

func (p *Parker) push(e *Parked) { heap.Push(&p.timers, e) }

func (p *Parker) remove(i int) {
	heap.Remove(&p.timers, i)
	if len(p.timers) == 0 && cap(p.timers) > 1024 {
		p.timers = nil
	}
}
