/*
 * example_io.h: what the example programs share: a blocking TCP transport for
 * a Botan TLS channel, the command-line flags, and loading keys for the
 * in-memory baseline. Not part of the consumer library (pskvault_botan.h).
 */
#ifndef PSKVAULT_BOTAN_EXAMPLE_IO_H
#define PSKVAULT_BOTAN_EXAMPLE_IO_H

#include "pskvault_botan.h"

#include <botan/tls_callbacks.h>
#include <botan/tls_channel.h>
#include <botan/tls_session.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace pskvault_botan::example {

// Conn is the Botan callbacks of one connection over socket fd: it writes
// what Botan emits, collects received application data and alerts, and
// records what the handshake negotiated.
class Conn : public Botan::TLS::Callbacks {
   public:
      explicit Conn(int fd) : m_fd(fd) {}

      void tls_emit_data(std::span<const uint8_t> data) override;
      void tls_record_received(uint64_t seq, std::span<const uint8_t> data) override;
      void tls_alert(Botan::TLS::Alert alert) override;
      void tls_session_established(const Botan::TLS::Session_Summary& s) override;
      bool tls_peer_closed_connection() override { return true; }

      // pump reads once from the socket and feeds the channel; false on end
      // of file or a socket error. TLS errors are thrown by Botan.
      bool pump(Botan::TLS::Channel& ch);

      // read_line pumps until a full line arrived (newline stripped).
      std::optional<std::string> read_line(Botan::TLS::Channel& ch);

      bool established = false;
      bool write_failed = false;
      std::string psk_identity_hex;  // the PskIdentity the handshake used
      std::string suite;
      std::string kex;
      std::vector<std::string> alerts;
      std::string inbox;

   private:
      int m_fd;
};

// describe_failure turns a handshake's end into one line: Botan's exception
// text, the alerts received, and the key source's error when there was one.
std::string describe_failure(const std::string& what, const Conn& c, const Credentials* creds);

// Flags parses --name value pairs and bare --flags named in bools.
class Flags {
   public:
      Flags(int argc, char** argv, const std::vector<std::string>& bools);
      std::string get(const std::string& name, const std::string& def = "") const;
      bool has(const std::string& name) const { return m_values.contains(name); }
      const std::string& mode() const { return m_mode; }

   private:
      std::map<std::string, std::string> m_values;
      std::string m_mode;
};

// load_static_keys reads KEYFILE lines "IMPORTED_IDENTITY_HEX IPSKX_HEX KDF"
// (KDF sha256|sha384) into an in-memory source: the baseline of the
// benchmark, and the form a stack's configuration would hold. The file must
// not be readable by group or others.
std::shared_ptr<StaticKeySource> load_static_keys(const std::string& path);

// read_hex_key_file reads a key in hex (what `pskvault psk create --format hex --out`
// writes) from a file.
Botan::secure_vector<uint8_t> read_hex_key_file(const std::string& path);

// import_epsk runs Botan's own RFC 9258 importer (Botan::TLS::PSKImporter)
// on the EPSK in --import-epsk FILE with --identity-hex, --context-hex,
// --epsk-hash (sha256) and --kdf: a native-importer peer, as GnuTLS 3.8 or
// BoringSSL would be, built from the same library.
std::shared_ptr<StaticKeySource> import_epsk(const Flags& f);

// key_source builds the source the flags name: --data-socket (the vault,
// optionally --context-hex and --daemon-uid), --static-keys FILE, or
// --import-epsk FILE (Botan's native importer, see import_epsk).
std::shared_ptr<KeySource> key_source(const Flags& f);

// split_host_port parses HOST:PORT.
std::pair<std::string, int> split_host_port(const std::string& s);

}  // namespace pskvault_botan::example

#endif
