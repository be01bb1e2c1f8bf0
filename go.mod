module github.com/pskvault/pskvault

go 1.26.8

require (
	github.com/google/go-tpm v0.9.8 // indirect
	github.com/miekg/pkcs11 v1.1.2 // indirect
	go.etcd.io/bbolt v1.4.3 // indirect
	golang.org/x/sys v0.50.0 // indirect
	golang.org/x/text v0.44.0 // indirect
)
