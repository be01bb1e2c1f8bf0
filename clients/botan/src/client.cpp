/*
 * pskvault-botan-client: a Botan 3 TLS 1.3 client whose PSKs come from
 * pskvault, as RFC 9258 imported PSKs ("imp binder").
 *
 *   pskvault-botan-client --data-socket /run/pskvault/data/pskvault.sock \
 *       --connect 127.0.0.1:4433 --server-node node-b [--kdf sha256|sha384] \
 *       [--message TEXT] [--daemon-uid UID] [--ext-binder]
 *
 * It asks the vault for the offers to server node --server-node (the PSKs
 * whose client is this node and server that node, usable now, newest
 * generation first), offers them all, sends TEXT and a newline, and prints
 * the reply. Lines on stdout: "handshake ok: identity=HEX suite=NAME
 * kex=NAME", "handshake failed: REASON", "reply: LINE". Exit status 0 when
 * the handshake completed and the reply came back.
 *
 * --static-keys FILE and --ext-binder as for pskvault-botan-echo-server.
 */
#include "example_io.h"
#include "pskvault_botan.h"

#include <botan/auto_rng.h>
#include <botan/tls_client.h>
#include <botan/tls_exceptn.h>
#include <botan/tls_session_manager_noop.h>

#include <arpa/inet.h>
#include <csignal>
#include <iostream>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

using namespace pskvault_botan;
using namespace pskvault_botan::example;

int main(int argc, char** argv) {
   std::signal(SIGPIPE, SIG_IGN);
   try {
      Flags f(argc, argv, {"ext-binder"});
      Target target{TLS13, kdf_by_name(f.get("kdf", "sha256"))};
      const std::string server_node = f.get("server-node");
      if(server_node.empty()) {
         throw std::invalid_argument("--server-node is required");
      }
      auto creds = std::make_shared<Credentials>(key_source(f), target, server_node, !f.has("ext-binder"));
      auto policy = std::make_shared<Policy>(target);
      auto rng = std::make_shared<Botan::AutoSeeded_RNG>();
      const auto [host, port] = split_host_port(f.get("connect"));

      const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in a{};
      a.sin_family = AF_INET;
      a.sin_port = htons(static_cast<uint16_t>(port));
      if(::inet_pton(AF_INET, host.c_str(), &a.sin_addr) != 1) {
         throw std::invalid_argument("--connect wants an IPv4 address, got " + host);
      }
      if(fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
         throw std::runtime_error("cannot connect to " + f.get("connect"));
      }
      timeval tv{10, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);

      auto conn = std::make_shared<Conn>(fd);
      // No SNI: the server's name is not needed to pick a PSK and would
      // name the node in clear.
      Botan::TLS::Client client(conn,
                                std::make_shared<Botan::TLS::Session_Manager_Noop>(),
                                creds,
                                policy,
                                rng,
                                Botan::TLS::Server_Information(),
                                Botan::TLS::Protocol_Version::TLS_V13);
      try {
         while(!client.is_handshake_complete()) {
            if(!conn->pump(client) || client.is_closed()) {
               std::cout << "handshake failed: " << describe_failure("connection closed", *conn, creds.get())
                         << std::endl;
               return 1;
            }
         }
      } catch(const std::exception& e) {
         std::cout << "handshake failed: " << describe_failure(e.what(), *conn, creds.get()) << std::endl;
         return 1;
      }
      std::cout << "handshake ok: identity=" << conn->psk_identity_hex << " suite=" << conn->suite
                << " kex=" << conn->kex << std::endl;
      client.send(f.get("message", "hello") + "\n");
      auto line = conn->read_line(client);
      if(!line) {
         std::cout << "no reply" << std::endl;
         return 1;
      }
      std::cout << "reply: " << *line << std::endl;
      client.close();
      ::close(fd);
      return 0;
   } catch(const std::exception& e) {
      std::cerr << "pskvault-botan-client: error: " << e.what() << std::endl;
      return 2;
   }
}
