/*
 * pskvault-botan-echo-server: a Botan 3 TLS 1.3 echo server whose PSKs come
 * from pskvault, as RFC 9258 imported PSKs ("imp binder").
 *
 *   pskvault-botan-echo-server --data-socket /run/pskvault/data/pskvault.sock \
 *       --listen 127.0.0.1:4433 [--kdf sha256|sha384] [--context-hex HEX] \
 *       [--naccept N] [--daemon-uid UID] [--ext-binder]
 *
 * For every ClientHello it asks the vault's lookup with the PskIdentity bytes
 * received; the vault checks the caller, the record and the target, and hands
 * back the ipskx. Nothing is cached: a revoked key fails the next handshake.
 * One line per event on stdout: "listening on PORT", "handshake ok:
 * identity=HEX suite=NAME kex=NAME", "handshake failed: REASON", "received:
 * LINE". Each connection's first line is echoed back; N connections (0: no
 * limit), one at a time.
 *
 * --static-keys FILE instead of --data-socket serves keys from a 0600 file of
 * "IMPORTED_IDENTITY_HEX IPSKX_HEX KDF" lines (the in-memory baseline of the
 * benchmark). --ext-binder hands the keys to Botan as ordinary external PSKs,
 * as OpenSSL- or GnuTLS-3.7-fed consumers use them: only to show that such an
 * endpoint cannot meet an RFC 9258-native peer.
 */
#include "example_io.h"
#include "pskvault_botan.h"

#include <botan/auto_rng.h>
#include <botan/tls_exceptn.h>
#include <botan/tls_server.h>
#include <botan/tls_session_manager_noop.h>

#include <arpa/inet.h>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

using namespace pskvault_botan;
using namespace pskvault_botan::example;

static int serve_one(int fd, const std::shared_ptr<Credentials>& creds, const std::shared_ptr<Policy>& policy,
                     const std::shared_ptr<Botan::RandomNumberGenerator>& rng) {
   auto conn = std::make_shared<Conn>(fd);
   Botan::TLS::Server server(conn, std::make_shared<Botan::TLS::Session_Manager_Noop>(), creds, policy, rng);
   try {
      while(!server.is_handshake_complete()) {
         if(!conn->pump(server)) {
            std::cout << "handshake failed: " << describe_failure("connection closed by peer", *conn, creds.get())
                      << std::endl;
            return 1;
         }
         if(server.is_closed()) {
            std::cout << "handshake failed: " << describe_failure("connection closed", *conn, creds.get())
                      << std::endl;
            return 1;
         }
      }
      std::cout << "handshake ok: identity=" << conn->psk_identity_hex << " suite=" << conn->suite
                << " kex=" << conn->kex << std::endl;
      auto line = conn->read_line(server);
      if(!line) {
         std::cout << "no data" << std::endl;
         return 1;
      }
      std::cout << "received: " << *line << std::endl;
      server.send(*line + "\n");
      server.close();
      return 0;
   } catch(const std::exception& e) {
      std::cout << "handshake failed: " << describe_failure(e.what(), *conn, creds.get()) << std::endl;
      return 1;
   }
}

int main(int argc, char** argv) {
   std::signal(SIGPIPE, SIG_IGN);
   try {
      Flags f(argc, argv, {"ext-binder"});
      Target target{TLS13, kdf_by_name(f.get("kdf", "sha256"))};
      auto creds = std::make_shared<Credentials>(key_source(f), target, "", !f.has("ext-binder"));
      auto policy = std::make_shared<Policy>(target);
      auto rng = std::make_shared<Botan::AutoSeeded_RNG>();
      const auto [host, port] = split_host_port(f.get("listen", "127.0.0.1:0"));
      const int naccept = std::stoi(f.get("naccept", "0"));

      const int ls = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      const int one = 1;
      ::setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(port));
      if(::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
         throw std::invalid_argument("--listen wants an IPv4 address, got " + host);
      }
      if(ls < 0 || ::bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(ls, 64) != 0) {
         throw std::runtime_error("cannot listen on " + f.get("listen", "127.0.0.1:0"));
      }
      socklen_t alen = sizeof a;
      ::getsockname(ls, reinterpret_cast<sockaddr*>(&a), &alen);
      std::cout << "listening on " << ntohs(a.sin_port) << std::endl;

      int failures = 0;
      for(int i = 0; naccept == 0 || i < naccept; i++) {
         const int fd = ::accept4(ls, nullptr, nullptr, SOCK_CLOEXEC);
         if(fd < 0) {
            continue;
         }
         timeval tv{10, 0};  // a stalled peer cannot hold the server
         ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
         ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
         failures += serve_one(fd, creds, policy, rng);
         ::close(fd);
      }
      ::close(ls);
      return failures == 0 ? 0 : 1;
   } catch(const std::exception& e) {
      std::cerr << "pskvault-botan-echo-server: error: " << e.what() << std::endl;
      return 2;
   }
}
