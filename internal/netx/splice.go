package netx

import (
	"net"
	"sync"
	"time"
)

// Splice copies bytes both ways until one side closes; idle bounds how long
// a direction may stay silent (0 = no limit). It returns the bytes sent
// downstream→upstream and upstream→downstream.
func Splice(down net.Conn, downBuf []byte, up net.Conn, upBuf []byte, idle time.Duration) (uint64, uint64) {
	var wg sync.WaitGroup
	var toUp, toDown uint64
	pipe := func(dst, src net.Conn, pre []byte, n *uint64) {
		defer wg.Done()
		if len(pre) > 0 {
			if _, err := dst.Write(pre); err != nil {
				src.Close()
				return
			}
			*n += uint64(len(pre))
		}
		buf := make([]byte, 16*1024)
		for {
			if idle > 0 {
				src.SetReadDeadline(time.Now().Add(idle))
			}
			k, err := src.Read(buf)
			if k > 0 {
				if _, werr := dst.Write(buf[:k]); werr != nil {
					break
				}
				*n += uint64(k)
			}
			if err != nil {
				break
			}
		}
		// Half-close when possible, so the peer sees EOF; else close.
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		// The other direction ends soon after: give the peer a moment to
		// close its side too.
		dst.SetReadDeadline(time.Now().Add(2 * time.Second))
	}
	wg.Add(2)
	go pipe(up, down, downBuf, &toUp)
	pipe(down, up, upBuf, &toDown)
	wg.Wait()
	down.Close()
	up.Close()
	return toUp, toDown
}
