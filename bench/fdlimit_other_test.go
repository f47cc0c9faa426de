//go:build !unix

package main

func raiseFileLimit(uint64) bool { return true }
