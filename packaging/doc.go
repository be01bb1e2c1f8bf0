// Package packaging holds no code: its directory holds the nfpm description
// of pskvault's .deb and .rpm (nfpm.yaml, built by build.sh) and the files
// they install besides contrib/systemd; its test builds the .deb and checks
// what it holds and that it installs.
package packaging
