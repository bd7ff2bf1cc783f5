//! `keyward authority serve`: the EST node (src/est/server.rs), opened with the same
//! [`with_change`] as every other authority command.

use super::args::ServeArgs;
use super::authority_cmd::with_change_serve;
use super::output::{outln, print_json};
use super::Context;
use crate::est::server::{serve as run, ServeOptions, PREFIX};
use crate::Error;

/// Token work runs on one thread per node: keyward initialises the PKCS#11 module without
/// promising OS locking (some modules take that as leave to skip their own), so a process uses
/// its token from one thread at a time. Since serverkeygen generates its key before taking the
/// authority's lock (src/est/node.rs), one node's key generation overlaps the other nodes'
/// commits: nodes, each with its own token, are what scale.
const WORKERS: usize = 1;

/// Runs the node until it is stopped.
pub fn serve(ctx: &mut Context, a: &ServeArgs) -> Result<(), Error> {
    let opts = ServeOptions {
        listen: a.listen,
        server_names: a.server_names.clone(),
        ready_file: a.ready_file.clone(),
        request_timeout: a.request_timeout,
        workers: WORKERS,
    };
    let json = ctx.json();
    let on_ready = move |bound: std::net::SocketAddr, names: &[String]| {
        let url = format!("https://{bound}{PREFIX}/");
        if json {
            print_json(&serde_json::json!({
                "listening": bound.to_string(),
                "url": url,
                "server_names": names,
            }));
        } else {
            outln!(
                "listening on {url} (TLS certificate for {})",
                names.join(", ")
            );
        }
        Ok(())
    };
    with_change_serve(ctx, &a.dir, |ch| {
        run(ch, &a.dir, &opts, &on_ready).map_err(|e| Error::Est(e.into()))
    })
}
