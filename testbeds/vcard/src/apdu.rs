//! From vpcd's raw APDUs to the PIV application and back.
//!
//! vpcd hands over each APDU exactly as the reader driver got it: commands may be chained
//! (CLA bit 0x10), and a response longer than the host asked for must be returned in pieces
//! (`61xx`, then GET RESPONSE). piv-authenticator does neither itself; this adapter does, and
//! clears the PIN-verified state when the reader resets or powers the card off, as a real card
//! loses it with its power.

use heapless::Vec as HVec;
use iso7816::{command::CommandView, Command, Instruction, Status};
use piv_authenticator::Authenticator;

/// The largest command (after chaining) and response the card handles: an RSA-4096
/// certificate object with room to spare.
const MAX_APDU: usize = 7609;

/// `VERIFY` with P1=FF: "forget that the PIN was verified" (SP 800-73-4, part 2, 3.2.1).
const LOGOUT: [u8; 4] = [0x00, 0x20, 0xFF, 0x80];

/// A PIV application behind the APDU transport rules of a contact card.
pub struct Card<T: piv_authenticator::Client> {
    app: Authenticator<T>,
    /// The command being chained, if the last one said "more follows".
    chained: Option<Command<MAX_APDU>>,
    /// The response not yet collected by GET RESPONSE.
    pending: Vec<u8>,
}

impl<T: piv_authenticator::Client> Card<T> {
    pub fn new(app: Authenticator<T>) -> Self {
        Self {
            app,
            chained: None,
            pending: Vec::new(),
        }
    }

    /// Handles one APDU from the reader; returns the response APDU (data and status word).
    pub fn execute(&mut self, apdu: &[u8]) -> Vec<u8> {
        match self.handle(apdu) {
            Ok(response) => response,
            Err(status) => status_word(status).to_vec(),
        }
    }

    /// What a reset or power-off does to a card: no half-received command, no half-sent
    /// response, and the PIN is no longer verified.
    pub fn reset(&mut self) {
        self.chained = None;
        self.pending.clear();
        let logout = CommandView::try_from(&LOGOUT[..]).expect("a well-formed APDU");
        let mut reply: HVec<u8, MAX_APDU> = HVec::new();
        if let Err(status) = self.app.respond(logout, reply.as_mut_view()) {
            log::warn!("clearing the PIN state on reset failed: {status:?}");
        }
    }

    fn handle(&mut self, apdu: &[u8]) -> Result<Vec<u8>, Status> {
        let command = CommandView::try_from(apdu).map_err(|error| {
            log::warn!("unparsable APDU: {error:?}");
            Status::WrongLength
        })?;

        if command.instruction() == Instruction::GetResponse {
            if self.pending.is_empty() {
                return Err(Status::ConditionsOfUseNotSatisfied);
            }
            return Ok(self.take_response(command.expected()));
        }
        // Any other command drops a response nobody collected.
        self.pending.clear();

        if !command.class().chain().last_or_only() {
            match &mut self.chained {
                Some(first) => first
                    .extend_from_command_view(command)
                    .map_err(|_| Status::WrongLength)?,
                None => self.chained = Some(command.to_owned().map_err(|_| Status::WrongLength)?),
            }
            return Ok(status_word(Status::Success).to_vec());
        }

        let mut reply: HVec<u8, MAX_APDU> = HVec::new();
        let result = match self.chained.take() {
            Some(mut whole) => {
                whole
                    .extend_from_command_view(command)
                    .map_err(|_| Status::WrongLength)?;
                self.app.respond(whole.as_view(), reply.as_mut_view())
            }
            None => self.app.respond(command, reply.as_mut_view()),
        };
        result?;
        self.pending = reply.to_vec();
        Ok(self.take_response(command.expected()))
    }

    /// Up to `expected` bytes of the pending response, with `9000` when that is all of it and
    /// `61xx` (xx = what remains, 00 for 256 or more) when the host must ask again.
    fn take_response(&mut self, expected: usize) -> Vec<u8> {
        let n = expected.min(self.pending.len());
        let mut response: Vec<u8> = self.pending.drain(..n).collect();
        let status = match self.pending.len() {
            0 => Status::Success,
            rest => Status::MoreAvailable(u8::try_from(rest).unwrap_or(0)),
        };
        response.extend_from_slice(&status_word(status));
        response
    }
}

fn status_word(status: Status) -> [u8; 2] {
    status.into()
}

impl<T: piv_authenticator::Client> vpicc::VSmartCard for Card<T> {
    fn power_on(&mut self) {}

    fn power_off(&mut self) {
        self.reset();
    }

    fn reset(&mut self) {
        Card::reset(self);
    }

    fn execute(&mut self, msg: &[u8]) -> Vec<u8> {
        Card::execute(self, msg)
    }
}
