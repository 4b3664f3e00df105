// Command mmapfs mounts a store directory as a FUSE filesystem whose every
// file is served from a shared memory mapping of its blob.
package main

import (
	"fmt"
	"os"
)

func main() {
	setDaemonProcs()
	cmd := NewRootCommand()
	if err := cmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "mmapfs:", err)
		os.Exit(1)
	}
}
