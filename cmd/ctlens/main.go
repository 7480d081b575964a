// Command ctlens classifies chest CT scans with 3D deep networks and explains
// each answer with class-activation heatmaps.
//
// Each subcommand lives in its own file and registers itself on rootCmd.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

var rootCmd = &cobra.Command{
	Use:           "ctlens",
	Short:         "Classify chest CT scans with 3D networks and explain them with heatmaps",
	SilenceUsage:  true,
	SilenceErrors: true,
}

func main() {
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "ctlens:", err)
		os.Exit(1)
	}
}
