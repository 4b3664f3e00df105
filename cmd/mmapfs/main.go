// Command mmapfs mounts a store directory as a FUSE filesystem whose every
// file is served from a shared memory mapping of its blob.
package main

import (
	"errors"
	"fmt"
	"os"
)

func main() {
	setDaemonProcs()
	cmd := NewRootCommand()
	if err := cmd.Execute(); err != nil {
		var st *exitStatus
		if errors.As(err, &st) {
			os.Exit(st.code) // a traced command's failure, told by it
		}
		fmt.Fprintln(os.Stderr, "mmapfs:", err)
		var ue *usageError
		if errors.As(err, &ue) {
			fmt.Fprintln(os.Stderr, ue.usage())
		}
		os.Exit(1)
	}
}
