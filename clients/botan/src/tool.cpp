/*
 * pskvault-botan-tool: the Botan consumer's measuring and checking tool.
 *
 *   pskvault-botan-tool bench --server-socket S --client-socket C --server-node NODE
 *                             [--kdf sha256] [--rounds 40] [--handshakes 50] [--verbose 1]
 *       TLS 1.3 psk_dhe_ke handshakes per second, client and server in this
 *       process over memory (no sockets, one thread), with the server's PSK
 *       (a) asked from the vault's lookup at every handshake (S) and (b) held
 *       in memory, the same ipskx, taken from one lookup at start. Rounds
 *       pair a and b in ABBA order (load changes hit both alike). The
 *       client's keys come from one offers call (C) and stay in memory for
 *       both. Prints "vault=N/s memory=M/s ratio=R": the medians of the
 *       rates and of the rounds' ratios (--verbose 1: every round too), and
 *       "cpu: vault_us_per_hs=A memory_us_per_hs=B vault_lookups=L": this
 *       process's CPU time per handshake in each variant and how many
 *       lookups the daemon answered (warm-up and the baseline's one
 *       included), so that the daemon's CPU time can be added per lookup.
 *
 *   pskvault-botan-tool import --import-epsk FILE --identity-hex H [--context-hex C]
 *                              [--epsk-hash sha256|sha384] [--kdf sha256|sha384]
 *       run Botan's own RFC 9258 importer (Botan::TLS::PSKImporter) and print
 *       "imported_identity=HEX ipskx=HEX": for tests comparing pskvault's
 *       derivation with an independent implementation. Prints the key: a
 *       testing tool, never for production.
 */
#include "example_io.h"
#include "pskvault_botan.h"

#include <botan/auto_rng.h>
#include <botan/tls_client.h>
#include <botan/tls_server.h>
#include <botan/tls_session_manager_noop.h>

#include <algorithm>
#include <ctime>
#include <chrono>
#include <deque>
#include <iostream>

using namespace pskvault_botan;
using namespace pskvault_botan::example;

namespace {

// Pipe is one direction of an in-memory connection.
struct Pipe : Botan::TLS::Callbacks {
      std::vector<uint8_t> out;  // bytes this side emitted, not yet delivered
      bool established = false;

      void tls_emit_data(std::span<const uint8_t> d) override { out.insert(out.end(), d.begin(), d.end()); }

      void tls_record_received(uint64_t /*seq*/, std::span<const uint8_t> /*d*/) override {}

      void tls_alert(Botan::TLS::Alert /*a*/) override {}

      void tls_session_established(const Botan::TLS::Session_Summary& /*s*/) override { established = true; }
};

// one_handshake runs a full handshake in memory; throws on failure.
void one_handshake(const std::shared_ptr<Credentials>& server_creds,
                   const std::shared_ptr<Credentials>& client_creds,
                   const std::shared_ptr<Policy>& policy,
                   const std::shared_ptr<Botan::RandomNumberGenerator>& rng,
                   const std::shared_ptr<Botan::TLS::Session_Manager>& sessions) {
   auto sc = std::make_shared<Pipe>();
   auto cc = std::make_shared<Pipe>();
   Botan::TLS::Server server(sc, sessions, server_creds, policy, rng);
   Botan::TLS::Client client(cc,
                             sessions,
                             client_creds,
                             policy,
                             rng,
                             Botan::TLS::Server_Information(),
                             Botan::TLS::Protocol_Version::TLS_V13);
   for(int step = 0; step < 20 && !(server.is_handshake_complete() && client.is_handshake_complete()); step++) {
      if(!cc->out.empty()) {
         auto d = std::move(cc->out);
         cc->out.clear();
         server.received_data(d);
      }
      if(!sc->out.empty()) {
         auto d = std::move(sc->out);
         sc->out.clear();
         client.received_data(d);
      }
   }
   if(!server.is_handshake_complete() || !client.is_handshake_complete()) {
      throw std::runtime_error("handshake did not complete");
   }
}

// cpu_seconds is this process's CPU time (user and system): under a loaded
// machine wall-clock rates favour whichever variant sleeps (the vault one,
// waiting on the socket), so CPU per handshake is reported too.
double cpu_seconds() {
   timespec ts{};
   clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
   return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

double rate(int n,
            const std::shared_ptr<Credentials>& server_creds,
            const std::shared_ptr<Credentials>& client_creds,
            const std::shared_ptr<Policy>& policy,
            const std::shared_ptr<Botan::RandomNumberGenerator>& rng,
            const std::shared_ptr<Botan::TLS::Session_Manager>& sessions) {
   const auto start = std::chrono::steady_clock::now();
   for(int i = 0; i < n; i++) {
      one_handshake(server_creds, client_creds, policy, rng, sessions);
   }
   const std::chrono::duration<double> el = std::chrono::steady_clock::now() - start;
   return n / el.count();
}

double median(std::vector<double> v) {
   std::sort(v.begin(), v.end());
   return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

int bench(const Flags& f) {
   Target target{TLS13, kdf_by_name(f.get("kdf", "sha256"))};
   const std::string node = f.get("server-node");
   const int rounds = std::stoi(f.get("rounds", "40"));
   const int n = std::stoi(f.get("handshakes", "50"));

   // The client's keys: one offers call, then memory.
   VaultKeySource client_vault({f.get("client-socket"), std::nullopt, std::nullopt});
   auto client_keys = std::make_shared<StaticKeySource>();
   auto offers = client_vault.offers(node, target);
   if(offers.empty()) {
      throw std::runtime_error("the client vault offers no key for " + node);
   }
   const auto wire = offers.front().imported_identity;
   client_keys->add(std::move(offers.front()));
   auto client_creds = std::make_shared<Credentials>(client_keys, target, node);

   // The server: (a) the vault at every handshake, (b) the same ipskx in memory.
   auto server_vault = std::make_shared<VaultKeySource>(VaultKeySource::Options{f.get("server-socket"), {}, {}});
   auto server_keys = std::make_shared<StaticKeySource>();
   auto k = server_vault->lookup(wire, target);
   if(!k) {
      throw std::runtime_error("the server vault has no key for the offered identity");
   }
   server_keys->add(std::move(*k));
   auto vault_creds = std::make_shared<Credentials>(server_vault, target);
   auto memory_creds = std::make_shared<Credentials>(server_keys, target);

   auto policy = std::make_shared<Policy>(target);
   auto rng = std::make_shared<Botan::AutoSeeded_RNG>();
   auto sessions = std::make_shared<Botan::TLS::Session_Manager_Noop>();

   rate(20, vault_creds, client_creds, policy, rng, sessions);  // warm up
   rate(20, memory_creds, client_creds, policy, rng, sessions);
   // Paired rounds in ABBA order, so that a change of load on the machine
   // falls on both variants alike; the ratio is the median of the rounds'.
   std::vector<double> rv, rm, ratios;
   double cpu_v = 0, cpu_m = 0;
   auto timed = [&](const std::shared_ptr<Credentials>& c, double& cpu) {
      const double c0 = cpu_seconds();
      const double r = rate(n, c, client_creds, policy, rng, sessions);
      cpu += cpu_seconds() - c0;
      return r;
   };
   for(int r = 0; r < rounds; r++) {
      double v, m;
      if(r % 2 == 0) {
         v = timed(vault_creds, cpu_v);
         m = timed(memory_creds, cpu_m);
      } else {
         m = timed(memory_creds, cpu_m);
         v = timed(vault_creds, cpu_v);
      }
      rv.push_back(v);
      rm.push_back(m);
      ratios.push_back(v / m);
      if(f.has("verbose")) {
         std::cout << "round " << r + 1 << ": vault=" << static_cast<long>(v) << "/s memory=" << static_cast<long>(m)
                   << "/s" << std::endl;
      }
   }
   std::cout << "vault=" << static_cast<long>(median(rv)) << "/s memory=" << static_cast<long>(median(rm))
             << "/s ratio=" << median(ratios) << " (medians of " << rounds << " paired rounds of " << n
             << " handshakes, " << prf_name(target.kdf) << ")" << std::endl;
   const double total = static_cast<double>(rounds) * n;
   std::cout << "cpu: vault_us_per_hs=" << cpu_v / total * 1e6 << " memory_us_per_hs=" << cpu_m / total * 1e6
             << " vault_lookups=" << static_cast<long>(total) + 21 << std::endl;
   return 0;
}

int import(const Flags& f) {
   auto src = import_epsk(f);
   const uint16_t kdf = kdf_by_name(f.get("kdf", "sha256"));
   auto keys = src->offers("", Target{TLS13, kdf});
   std::cout << "imported_identity=" << to_hex(keys.at(0).imported_identity)
             << " ipskx=" << to_hex(keys.at(0).ipskx) << std::endl;
   return 0;
}

}  // namespace

int main(int argc, char** argv) {
   try {
      Flags f(argc, argv, {});
      if(f.mode() == "bench") {
         return bench(f);
      }
      if(f.mode() == "import") {
         return import(f);
      }
      std::cerr << "usage: pskvault-botan-tool bench|import [flags] (see the source)" << std::endl;
      return 2;
   } catch(const std::exception& e) {
      std::cerr << "pskvault-botan-tool: error: " << e.what() << std::endl;
      return 1;
   }
}
