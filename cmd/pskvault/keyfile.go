package main

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
)

// readHexKey reads a hex key from path ("-" for standard input), ignoring
// whitespace; a file that group or others can read is refused. Errors
// never contain the file's bytes.
func readHexKey(g *globals, path string) ([]byte, error) {
	raw, err := readSecretInput(g, path, 1<<16, "key file")
	if err != nil {
		return nil, err
	}
	defer clear(raw)
	compact := make([]byte, 0, len(raw))
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\n', '\r':
		default:
			compact = append(compact, c)
		}
	}
	defer clear(compact)
	if len(compact) == 0 {
		return nil, errors.New("key file is empty")
	}
	key := make([]byte, hex.DecodedLen(len(compact)))
	if _, err := hex.Decode(key, compact); err != nil {
		clear(key)
		// Do not echo the offending byte: it is part of a key.
		return nil, errors.New("key file is not hex (whitespace is ignored, nothing else is allowed)")
	}
	return key, nil
}

// createSecretFile creates path 0600, refusing to overwrite anything.
func createSecretFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, withHint(fmt.Errorf("%s already exists", path), "pskvault never overwrites key files; choose another --out")
	}
	return f, err
}

// writeHexKey writes key as hex and a newline to f, then syncs and closes it.
func writeHexKey(f *os.File, key []byte) error {
	buf := make([]byte, hex.EncodedLen(len(key))+1)
	defer clear(buf)
	hex.Encode(buf, key)
	buf[len(buf)-1] = '\n'
	_, err := f.Write(buf)
	return errors.Join(err, f.Sync(), f.Close())
}
