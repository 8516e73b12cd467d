//go:build !unix

package bolt

import "os"

// mapFile maps nothing where there is no mmap: the file is read instead.
func mapFile(*os.File, int64) ([]byte, func(), error) { return nil, nil, nil }
