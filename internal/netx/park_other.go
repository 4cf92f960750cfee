//go:build !linux

package netx

import (
	"errors"
	"syscall"
	"time"
)

// Parker is described in park.go; it needs epoll, so elsewhere there is
// none: NewParker fails and connections keep their goroutine.
type Parker struct{}

// NewParker fails: parking needs Linux.
func NewParker() (*Parker, error) { return nil, errors.ErrUnsupported }

// Park fails: parking needs Linux.
func (p *Parker) Park(rc syscall.RawConn, e *Parked, deadline time.Time, w Waker) error {
	return errors.ErrUnsupported
}

// Wake reports false: nothing is ever parked.
func (p *Parker) Wake(e *Parked) bool { return false }

// Len returns 0.
func (p *Parker) Len() int { return 0 }

// Close does nothing.
func (p *Parker) Close() error { return nil }
