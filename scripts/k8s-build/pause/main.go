// pause: sleeps until SIGTERM or SIGINT, reaping any child re-parented to it (PID 1 of a pod).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// Version is what `pause --version` prints; scripts/k8s-tools checks it.
const Version = "1"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "--version" {
		fmt.Println("pause " + Version)
		return
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)
	for {
		select {
		case <-stop:
			return
		case <-children:
			for {
				pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
				if pid <= 0 || err != nil {
					break
				}
			}
		}
	}
}
