// Command fakegw is a stand-in for the gateway in the harness's own tests:
// it prints a greeting from $GREETING and exits 0 on SIGTERM.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	fmt.Printf("fakegw says %s\n", os.Getenv("GREETING"))
	<-ch
	fmt.Println("fakegw stopping")
}
