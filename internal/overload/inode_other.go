//go:build !linux

package overload

import "os"

// inode is 0 where the platform's stat has none to compare.
func inode(os.FileInfo) uint64 { return 0 }
