//go:build !linux

package emu

import "net"

// Elsewhere the relay forwards datagram by datagram.

const oobSize = 0

func enableGRO(*net.UDPConn) bool     { return false }
func groSegment([]byte) int           { return 0 }
func gsoOOB(oob []byte, _ int) []byte { return oob }
