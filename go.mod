module github.com/pskvault/pskvault

go 1.26.8

require (
	github.com/google/go-tpm v0.9.8
	github.com/miekg/pkcs11 v1.1.2
	github.com/mtibben/confusables v0.0.0-20210201002637-9d1b0723b659
	go.etcd.io/bbolt v1.4.3
	golang.org/x/sys v0.50.0
	golang.org/x/text v0.44.0
)
