//! `keyward authority serve`: the EST node (src/est/server.rs), opened with the same
//! [`with_change`] as every other authority command.

use super::args::ServeArgs;
use super::authority_cmd::with_change_serve;
use super::output::{outln, print_json};
use super::Context;
use crate::est::server::{serve as run, ServeOptions, PREFIX};
use crate::Error;

/// Token work runs on this many threads; the authority's lock serialises their changes.
const WORKERS: usize = 2;

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
