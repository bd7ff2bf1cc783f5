//! Pulling the card out of the reader and putting it back, for tests of a token removed in the
//! middle of a command.
//!
//! With `--pull-file FILE`, FILE says where the card is:
//!
//! * absent: in the reader (the card connects to vpcd and answers);
//! * `now`: pulled — the connection to vpcd is closed at once, as a card yanked out
//!   of its reader, and the card waits outside until FILE is removed;
//! * `after N`: the Nth APDU from now is never answered: the card is pulled as it arrives
//!   (FILE then says `now`). Each APDU before it counts the file down (`after N-1`), so what
//!   is left tells how many APDUs a command sent. A test writes it before starting a command, to pull the card in
//!   the middle of that command at a point it chooses.
//!
//! Anything else (an empty or half-written file) counts as in the reader.
//!
//! The card's content (keys, PINs, counters) survives: only the reader loses it. Re-inserted,
//! the card is powered on afresh (no PIN verified).

use std::{
    fs,
    io,
    net::{Shutdown, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::Duration,
};

/// How often the card looks at its pull file while idle.
const WATCH: Duration = Duration::from_millis(50);

/// Where the pull file puts the card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Inserted,
    Pulled,
    PullAfter(u64),
}

/// Reads the pull file. Anything but `now` and `after N` (an empty file, a half-written one)
/// counts as "in the reader", so a writer that truncates first never pulls the card by mistake.
fn place(file: &Path) -> Place {
    let Ok(text) = fs::read_to_string(file) else {
        return Place::Inserted;
    };
    let text = text.trim();
    if text == "now" {
        return Place::Pulled;
    }
    text.strip_prefix("after ")
        .and_then(|n| n.trim().parse().ok())
        .map_or(Place::Inserted, Place::PullAfter)
}

/// Writes the pull file in one step (a new file renamed over it), so a reader never sees it
/// half-written.
fn set_place(file: &Path, text: &str) {
    let mut tmp = file.as_os_str().to_owned();
    tmp.push(".new");
    if fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, file)).is_err() {
        eprintln!("keyward-vcard: cannot write {}", file.display());
    }
}

/// Serves `card` on vpcd's `port` until vpcd closes the connection (or fails); with a pull
/// file, pulled cards are re-inserted when the file goes away.
pub fn serve<C: vpicc::VSmartCard>(
    port: u16,
    pull_file: Option<&Path>,
    card: &mut C,
    connect: impl Fn(u16) -> io::Result<TcpStream>,
) -> io::Result<()> {
    let Some(file) = pull_file else {
        return vpicc::Connection::from(connect(port)?).run(card);
    };
    loop {
        while place(file) == Place::Pulled {
            thread::sleep(WATCH);
        }
        let stream = connect(port)?;
        eprintln!("keyward-vcard: in the reader (connected to vpcd on 127.0.0.1:{port})");
        let (result, pulled) = serve_until_pulled(stream, file, card);
        if pulled || place(file) == Place::Pulled {
            eprintln!("keyward-vcard: pulled out of the reader");
            continue;
        }
        return result;
    }
}

/// Serves one stay in the reader; says whether the card pulled itself (`after N`).
fn serve_until_pulled<C: vpicc::VSmartCard>(
    stream: TcpStream,
    file: &Path,
    card: &mut C,
) -> (io::Result<()>, bool) {
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stream = match stream.try_clone() {
            Ok(stream) => stream,
            Err(e) => return (Err(e), false),
        };
        let file = file.to_path_buf();
        let done = Arc::clone(&done);
        thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if place(&file) == Place::Pulled {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                }
                thread::sleep(WATCH);
            }
        })
    };
    let mut counting = Counting {
        card,
        file: file.to_path_buf(),
        stream: match stream.try_clone() {
            Ok(stream) => stream,
            Err(e) => return (Err(e), false),
        },
        pulled: false,
    };
    let result = vpicc::Connection::from(stream).run(&mut counting);
    done.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    (result, counting.pulled)
}

/// The card, counting APDUs down to an `after N` pull.
struct Counting<'a, C> {
    card: &'a mut C,
    file: PathBuf,
    stream: TcpStream,
    /// The card pulled itself out (the count reached its end).
    pulled: bool,
}

impl<C: vpicc::VSmartCard> vpicc::VSmartCard for Counting<'_, C> {
    fn atr(&self) -> &[u8] {
        self.card.atr()
    }

    fn power_on(&mut self) {
        self.card.power_on();
    }

    fn power_off(&mut self) {
        self.card.power_off();
    }

    fn reset(&mut self) {
        self.card.reset();
    }

    /// With `after N` in the pull file, counts this APDU down (the file then says `after N-1`,
    /// so a test can also learn how many APDUs a command sent); the last one is not answered:
    /// the card leaves the reader as it arrives.
    fn execute(&mut self, msg: &[u8]) -> Vec<u8> {
        if let Place::PullAfter(n) = place(&self.file) {
            if n <= 1 {
                eprintln!("keyward-vcard: pulled in the middle of a command");
                set_place(&self.file, "now\n");
                self.pulled = true;
                let _ = self.stream.shutdown(Shutdown::Both);
                // Never sent: the connection is gone.
                return Vec::new();
            }
            set_place(&self.file, &format!("after {}\n", n - 1));
        }
        self.card.execute(msg)
    }
}
