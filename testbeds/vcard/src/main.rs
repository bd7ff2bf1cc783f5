//! keyward-vcard: a virtual PIV smart card for keyward's tests.
//!
//! The card application is the crates.io `piv-authenticator` on trussed's virtual platform
//! (RAM storage, a constant RNG seed: **for tests only**); it plugs into vsmartcard's `vpcd`
//! reader driver, so pcscd and OpenSC see it as a card in the reader "Virtual PCD 00 00".
//!
//! Usage: `keyward-vcard [--port PORT]` (vpcd's port on 127.0.0.1, default 35963). Runs until
//! vpcd closes the connection or the process is killed. Everything on the card is lost when
//! it exits.

mod apdu;
mod dispatch;

use std::{process::ExitCode, thread, time::Duration};

use piv_authenticator::{Authenticator, Options};
use trussed::virt::{self, StoreConfig};

/// How long to wait for vpcd (loaded by pcscd) to listen.
const CONNECT_TRIES: u32 = 100;

fn main() -> ExitCode {
    env_logger::init();
    let port = match parse_port(std::env::args().skip(1).collect()) {
        Ok(port) => port,
        Err(message) => {
            eprintln!("keyward-vcard: {message}");
            return ExitCode::from(2);
        }
    };
    let connection = match connect(port) {
        Ok(connection) => connection,
        Err(error) => {
            eprintln!(
                "keyward-vcard: cannot reach vpcd on 127.0.0.1:{port}: {error}; start pcscd with vsmartcard-vpcd installed"
            );
            return ExitCode::FAILURE;
        }
    };
    eprintln!("keyward-vcard: connected to vpcd on 127.0.0.1:{port}");

    let result = virt::with_platform(StoreConfig::ram(), |platform| {
        platform.run_client_with_backends(
            "piv",
            dispatch::Dispatch::new(),
            dispatch::BACKENDS,
            |client| {
                let app = Authenticator::new(client, Options::default());
                let mut card = apdu::Card::new(app);
                connection.run(&mut card)
            },
        )
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => {
            eprintln!("keyward-vcard: vpcd closed the connection");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keyward-vcard: connection to vpcd failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn parse_port(args: Vec<String>) -> Result<u16, String> {
    match args.as_slice() {
        [] => Ok(vpicc::DEFAULT_PORT),
        [flag, port] if flag == "--port" => port
            .parse()
            .map_err(|_| format!("--port takes a TCP port number, not {port:?}")),
        _ => Err("usage: keyward-vcard [--port PORT]".to_string()),
    }
}

fn connect(port: u16) -> std::io::Result<vpicc::Connection> {
    let mut tries = 0;
    loop {
        match vpicc::connect_socket(format!("127.0.0.1:{port}")) {
            Ok(connection) => return Ok(connection),
            Err(error) if tries + 1 >= CONNECT_TRIES => return Err(error),
            Err(_) => {
                tries += 1;
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
