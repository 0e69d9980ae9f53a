//! The ladder's prompts: which one plays when ([`PromptId`]), the set a call uses
//! ([`LadderPrompts`], embedded in the binary, each replaceable from `[prompts] dir`), and the
//! checks every prompt passes at start (format via [`Prompt::from_wav_bytes`], length).

use std::time::Duration;

use crate::core::media::prompt::{Prompt, PromptError, HIGH_DEMAND_WAV};

/// Shortest and longest prompt accepted at start.
pub const MIN_LENGTH: Duration = Duration::from_millis(300);
pub const MAX_LENGTH: Duration = Duration::from_secs(60);

/// "To be called back, press 1. To speak to a person, press 2."
pub const MENU_WAV: &[u8] = include_bytes!("../../../firmware/prompts/menu.wav");
/// "To be called back, press 1."
pub const MENU_NO_HUMAN_WAV: &[u8] = include_bytes!("../../../firmware/prompts/menu-no-human.wav");
/// "Sorry, that is not a valid choice."
pub const MENU_INVALID_WAV: &[u8] = include_bytes!("../../../firmware/prompts/menu-invalid.wav");
/// "Thank you. We will call you back as soon as possible. Goodbye."
pub const CALLBACK_CONFIRM_WAV: &[u8] =
    include_bytes!("../../../firmware/prompts/callback-confirm.wav");
/// "Please hold while we connect you to a person."
pub const TRANSFER_HOLD_WAV: &[u8] = include_bytes!("../../../firmware/prompts/transfer-hold.wav");
/// "Sorry, nobody is available right now. We will call you back. Goodbye."
pub const SORRY_CALLBACK_WAV: &[u8] =
    include_bytes!("../../../firmware/prompts/sorry-callback.wav");
/// "Thank you for calling. Goodbye."
pub const GOODBYE_WAV: &[u8] = include_bytes!("../../../firmware/prompts/goodbye.wav");

/// A prompt of the ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PromptId {
    HighDemand,
    Menu,
    MenuNoHuman,
    MenuInvalid,
    CallbackConfirm,
    TransferHold,
    SorryCallback,
    Goodbye,
}

impl PromptId {
    pub const ALL: [PromptId; 8] = [
        PromptId::HighDemand,
        PromptId::Menu,
        PromptId::MenuNoHuman,
        PromptId::MenuInvalid,
        PromptId::CallbackConfirm,
        PromptId::TransferHold,
        PromptId::SorryCallback,
        PromptId::Goodbye,
    ];

    /// Its key in `[prompts]` (the file name is the default value of that key).
    pub fn key(self) -> &'static str {
        match self {
            PromptId::HighDemand => "high_demand",
            PromptId::Menu => "menu",
            PromptId::MenuNoHuman => "menu_no_human",
            PromptId::MenuInvalid => "menu_invalid",
            PromptId::CallbackConfirm => "callback_confirm",
            PromptId::TransferHold => "transfer_hold",
            PromptId::SorryCallback => "sorry_callback",
            PromptId::Goodbye => "goodbye",
        }
    }

    /// The file name in `firmware/prompts/` (and the default in `[prompts] dir`).
    pub fn file_name(self) -> &'static str {
        match self {
            PromptId::HighDemand => "high-demand.wav",
            PromptId::Menu => "menu.wav",
            PromptId::MenuNoHuman => "menu-no-human.wav",
            PromptId::MenuInvalid => "menu-invalid.wav",
            PromptId::CallbackConfirm => "callback-confirm.wav",
            PromptId::TransferHold => "transfer-hold.wav",
            PromptId::SorryCallback => "sorry-callback.wav",
            PromptId::Goodbye => "goodbye.wav",
        }
    }

    /// The copy built into the binary.
    pub fn embedded_wav(self) -> &'static [u8] {
        match self {
            PromptId::HighDemand => HIGH_DEMAND_WAV,
            PromptId::Menu => MENU_WAV,
            PromptId::MenuNoHuman => MENU_NO_HUMAN_WAV,
            PromptId::MenuInvalid => MENU_INVALID_WAV,
            PromptId::CallbackConfirm => CALLBACK_CONFIRM_WAV,
            PromptId::TransferHold => TRANSFER_HOLD_WAV,
            PromptId::SorryCallback => SORRY_CALLBACK_WAV,
            PromptId::Goodbye => GOODBYE_WAV,
        }
    }
}

/// Why a prompt is refused at start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LadderPromptError {
    #[error(transparent)]
    Format(#[from] PromptError),
    #[error("prompt is {ms} ms long; it must be between {} ms and {} s", MIN_LENGTH.as_millis(), MAX_LENGTH.as_secs())]
    Length { ms: u64 },
}

/// Loads a prompt from WAV bytes and checks its length.
pub fn load_checked(bytes: &[u8]) -> Result<Prompt, LadderPromptError> {
    let prompt = Prompt::from_wav_bytes(bytes)?;
    check_length(&prompt)?;
    Ok(prompt)
}

/// A prompt's length must be within [`MIN_LENGTH`]..=[`MAX_LENGTH`].
pub fn check_length(prompt: &Prompt) -> Result<(), LadderPromptError> {
    let ms = prompt.duration_ms();
    if ms < MIN_LENGTH.as_millis() as u64 || ms > MAX_LENGTH.as_millis() as u64 {
        return Err(LadderPromptError::Length { ms });
    }
    Ok(())
}

/// The prompts one call may hear on the ladder (the high-demand prompt included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LadderPrompts {
    prompts: [Prompt; 8],
}

impl LadderPrompts {
    /// Every prompt from the copies built into the binary.
    pub fn embedded() -> Result<LadderPrompts, (PromptId, LadderPromptError)> {
        LadderPrompts::try_from_fn(|id| load_checked(id.embedded_wav()).map_err(|e| (id, e)))
    }

    /// Every prompt from `f`; the first error is returned.
    pub fn try_from_fn<E>(
        mut f: impl FnMut(PromptId) -> Result<Prompt, E>,
    ) -> Result<LadderPrompts, E> {
        let [a, b, c, d, e, g, h, i] = PromptId::ALL;
        Ok(LadderPrompts { prompts: [f(a)?, f(b)?, f(c)?, f(d)?, f(e)?, f(g)?, f(h)?, f(i)?] })
    }

    /// The same prompt for every id (tests).
    pub fn uniform(prompt: Prompt) -> LadderPrompts {
        LadderPrompts { prompts: std::array::from_fn(|_| prompt.clone()) }
    }

    /// Replaces one prompt.
    pub fn set(&mut self, id: PromptId, prompt: Prompt) {
        self.prompts[id as usize] = prompt;
    }

    pub fn get(&self, id: PromptId) -> &Prompt {
        &self.prompts[id as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_prompt_is_speech_of_a_sane_length() {
        let all = LadderPrompts::embedded().unwrap();
        for id in PromptId::ALL {
            let p = all.get(id);
            let ms = p.duration_ms();
            assert!((500..=8000).contains(&ms), "{id:?} is {ms} ms");
            let peak = p.samples().iter().map(|s| i32::from(*s).abs()).max().unwrap();
            assert!(peak > 5000, "{id:?} peak {peak}");
        }
        assert_ne!(all.get(PromptId::Menu), all.get(PromptId::MenuNoHuman));
    }

    #[test]
    fn too_short_and_too_long_prompts_are_refused() {
        let short = Prompt::from_samples(vec![100; 800]).unwrap(); // 100 ms
        assert_eq!(check_length(&short), Err(LadderPromptError::Length { ms: 100 }));
        let long = Prompt::from_samples(vec![100; 8000 * 61]).unwrap();
        let err = check_length(&long).unwrap_err();
        assert!(err.to_string().contains("61000 ms") && err.to_string().contains("60 s"), "{err}");
        assert!(check_length(&Prompt::from_samples(vec![100; 8000]).unwrap()).is_ok());
    }

    #[test]
    fn the_first_failure_names_its_prompt() {
        let err = LadderPrompts::try_from_fn(|id| {
            let bytes: &[u8] =
                if id == PromptId::MenuInvalid { b"not a wav" } else { id.embedded_wav() };
            load_checked(bytes).map_err(|e| (id, e))
        })
        .unwrap_err();
        assert_eq!(err.0, PromptId::MenuInvalid);
        assert!(matches!(err.1, LadderPromptError::Format(PromptError::Wav(_))));
    }
}
