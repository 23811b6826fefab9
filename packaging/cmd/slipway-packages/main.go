// Command slipway-packages builds the .deb packages of slipway-agent,
// slipway-server and the slipway CLI from the binaries in -bin (`make
// packages` runs it after `make build`). See package packaging.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/slipway-dev/slipway/packaging"
)

func main() {
	bin := flag.String("bin", "bin", "directory holding slipway-agent, slipway-server and slipway")
	out := flag.String("out", "dist", "directory the .deb files are written to")
	version := flag.String("version", "", "git describe output (default: run git describe --tags --always --dirty)")
	arch := flag.String("arch", runtime.GOARCH, "GOARCH of the binaries")
	flag.Parse()
	if err := run(*bin, *out, *version, *arch); err != nil {
		fmt.Fprintf(os.Stderr, "slipway-packages: error: %v\n", err)
		os.Exit(1)
	}
}

func run(bin, out, version, arch string) error {
	if flag.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flag.Args())
	}
	if version == "" {
		b, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
		if err != nil {
			return fmt.Errorf("git describe: %w (or pass -version)", err)
		}
		version = strings.TrimSpace(string(b))
	}
	paths, err := packaging.Build(packaging.Options{BinDir: bin, OutDir: out, Version: version, Arch: arch})
	for _, p := range paths {
		fmt.Println(p)
	}
	return err
}
