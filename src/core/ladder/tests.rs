//! The ladder on a fake clock: every path, and the silence rule measured on a simulated call
//! (prompts of realistic lengths, the media's 20 ms frame, ringback while the human rings).

use super::*;

const MS: Duration = Duration::from_millis(1);

fn cfg(human: bool) -> LadderConfig {
    LadderConfig { human, ..LadderConfig::default() }
}

/// Lengths close to the shipped prompts.
fn length(id: PromptId) -> Duration {
    MS * match id {
        PromptId::HighDemand => 4200,
        PromptId::Menu => 5200,
        PromptId::MenuNoHuman => 2600,
        PromptId::MenuInvalid => 2600,
        PromptId::CallbackConfirm => 5000,
        PromptId::TransferHold => 3000,
        PromptId::SorryCallback => 5700,
        PromptId::Goodbye => 2700,
    }
}

#[derive(Debug, Clone)]
enum In {
    Digit(char),
    Human(HumanOutcome),
    CallerGone,
}

/// One call on the ladder: plays prompts for their length (the media reports the end one
/// 20 ms frame later), fires the ladder's timers, delivers scripted inputs, and records every
/// stretch of audio the caller hears and every stretch that is the caller's turn.
struct Sim {
    ladder: Ladder,
    t0: Instant,
    now: Instant,
    actions: Vec<LadderAction>,
    playing: Option<(PromptId, Instant, Instant)>,
    audio: Vec<(Instant, Instant, String)>,
    turns: Vec<(Instant, Instant)>,
    turn_from: Option<Instant>,
    human_from: Option<Instant>,
    script: Vec<(Duration, In)>,
    hung_up: Option<Instant>,
}

impl Sim {
    fn new(cfg: LadderConfig, script: Vec<(Duration, In)>) -> Sim {
        let t0 = Instant::now();
        let (ladder, out) = Ladder::start(t0, cfg);
        let mut sim = Sim {
            ladder,
            t0,
            now: t0,
            actions: Vec::new(),
            playing: None,
            audio: Vec::new(),
            turns: Vec::new(),
            turn_from: None,
            human_from: None,
            script,
            hung_up: None,
        };
        sim.apply(out);
        sim
    }

    fn apply(&mut self, out: Vec<LadderAction>) {
        for a in out {
            match &a {
                LadderAction::Play(id) => {
                    self.stop_playing();
                    self.playing = Some((*id, self.now, self.now + length(*id)));
                }
                LadderAction::StopPrompt => self.stop_playing(),
                LadderAction::StartHuman => self.human_from = Some(self.now),
                LadderAction::HangUp => self.hung_up = Some(self.now),
                _ => {}
            }
            self.actions.push(a);
        }
        self.track_turn();
    }

    fn stop_playing(&mut self) {
        if let Some((id, from, end)) = self.playing.take() {
            self.audio.push((from, end.min(self.now), format!("{id:?}")));
        }
    }

    /// The human leg's audio (hold prompt, then ringback, then the person) ends now.
    fn human_audio_ends(&mut self) {
        if let Some(from) = self.human_from.take() {
            self.audio.push((from, self.now, "human leg".into()));
        }
    }

    fn track_turn(&mut self) {
        let waiting = matches!(self.ladder.stage(), Stage::WaitKey { .. });
        match (waiting, self.turn_from) {
            (true, None) => self.turn_from = Some(self.now),
            (false, Some(from)) => {
                self.turns.push((from, self.now));
                self.turn_from = None;
            }
            _ => {}
        }
    }

    /// Runs until the ladder hangs up or is done, at most `limit` of fake time.
    fn run(&mut self, limit: Duration) {
        for _ in 0..10_000 {
            if self.hung_up.is_some()
                || self.ladder.stage() == Stage::Done
                || self.now - self.t0 > limit
            {
                break;
            }
            let finished = self.playing.map(|(_, _, end)| end + 20 * MS);
            let scripted = self.script.first().map(|(at, _)| self.t0 + *at);
            let next = [finished, self.ladder.poll_timeout(), scripted].into_iter().flatten().min();
            let Some(next) = next else { break };
            self.now = next.max(self.now);
            if scripted == Some(next) {
                let (_, input) = self.script.remove(0);
                let out = match input {
                    In::Digit(d) => self.ladder.digit(self.now, d),
                    In::Human(o) => {
                        if matches!(
                            o,
                            HumanOutcome::NoAnswer
                                | HumanOutcome::Unavailable { .. }
                                | HumanOutcome::Ended
                        ) {
                            self.human_audio_ends();
                        }
                        self.ladder.human(self.now, o)
                    }
                    In::CallerGone => {
                        self.stop_playing();
                        self.human_audio_ends();
                        self.ladder.caller_gone(self.now)
                    }
                };
                self.apply(out);
            } else if finished == Some(next) {
                self.stop_playing();
                let out = self.ladder.prompt_finished(self.now);
                self.apply(out);
            } else {
                let out = self.ladder.handle_timeout(self.now);
                if out.contains(&LadderAction::StopHuman) {
                    self.human_audio_ends();
                }
                self.apply(out);
            }
        }
        self.stop_playing();
    }

    fn played(&self) -> Vec<PromptId> {
        self.actions
            .iter()
            .filter_map(|a| if let LadderAction::Play(id) = a { Some(*id) } else { None })
            .collect()
    }

    fn callbacks(&self) -> Vec<CallbackReason> {
        self.actions
            .iter()
            .filter_map(|a| {
                if let LadderAction::Callback { reason, .. } = a {
                    Some(*reason)
                } else {
                    None
                }
            })
            .collect()
    }

    /// The longest silence between the start and the hang-up (or the caller leaving) that is
    /// not the caller's turn after the menu.
    fn largest_gap(&self) -> Duration {
        let end = self.hung_up.unwrap_or(self.now);
        let mut covered: Vec<(Instant, Instant)> =
            self.audio.iter().map(|(a, b, _)| (*a, *b)).collect();
        covered.extend(self.turns.iter().copied());
        covered.sort();
        let mut reach = self.t0;
        let mut gap = Duration::ZERO;
        for (from, to) in covered {
            gap = gap.max(from.saturating_duration_since(reach));
            reach = reach.max(to);
        }
        gap.max(end.saturating_duration_since(reach))
    }

    fn assert_no_silence(&self) {
        let gap = self.largest_gap();
        assert!(
            gap <= Duration::from_secs(1),
            "{gap:?} of silence between rungs: {:?}",
            self.audio
        );
        for (from, to) in &self.turns {
            assert!(
                *to - *from <= Duration::from_secs(8),
                "a caller's turn lasted {:?}",
                *to - *from
            );
        }
    }
}

fn at(ms: u64) -> Duration {
    MS * ms as u32
}

#[test]
fn key_1_at_the_menu_requests_a_callback_confirms_and_hangs_up() {
    let mut sim = Sim::new(cfg(true), vec![(at(10_000), In::Digit('1'))]);
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.played(), vec![PromptId::HighDemand, PromptId::Menu, PromptId::CallbackConfirm]);
    assert_eq!(sim.callbacks(), vec![CallbackReason::CallerAsked]);
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu, Rung::Callback]);
    assert_eq!(sim.ladder.callback(), Some(CallbackReason::CallerAsked));
    // confirmation played whole, then the hang-up one frame later
    assert_eq!(
        sim.hung_up,
        Some(sim.t0 + at(10_000) + length(PromptId::CallbackConfirm) + 20 * MS)
    );
    sim.assert_no_silence();
}

#[test]
fn a_key_during_the_high_demand_prompt_barges_in() {
    let mut sim = Sim::new(cfg(false), vec![(at(1000), In::Digit('1'))]);
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.played(), vec![PromptId::HighDemand, PromptId::CallbackConfirm]);
    assert_eq!(sim.audio[0].1, sim.t0 + at(1000), "the prompt stops at the key");
    sim.assert_no_silence();
}

#[test]
fn without_a_human_the_menu_offers_only_key_1_and_key_2_is_unknown() {
    let mut sim = Sim::new(cfg(false), vec![(at(7000), In::Digit('2'))]);
    sim.run(Duration::from_secs(60));
    let played = sim.played();
    assert_eq!(&played[..3], &[PromptId::HighDemand, PromptId::MenuNoHuman, PromptId::MenuInvalid]);
    assert!(!sim.actions.contains(&LadderAction::StartHuman));
    sim.assert_no_silence();
}

#[test]
fn no_key_replays_the_menu_then_requests_a_callback() {
    let mut sim = Sim::new(cfg(true), vec![]);
    sim.run(Duration::from_secs(120));
    assert_eq!(
        sim.played(),
        vec![PromptId::HighDemand, PromptId::Menu, PromptId::Menu, PromptId::SorryCallback]
    );
    assert_eq!(sim.callbacks(), vec![CallbackReason::MenuNoAnswer]);
    assert_eq!(sim.turns.len(), 2);
    for (from, to) in &sim.turns {
        assert_eq!(*to - *from, Duration::from_secs(8), "the caller's turn is menu_timeout_s");
    }
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu, Rung::Callback]);
    sim.assert_no_silence();
}

#[test]
fn no_key_with_no_answer_goodbye_says_goodbye_without_a_callback() {
    let c = LadderConfig { no_answer: NoAnswer::Goodbye, menu_attempts: 3, ..cfg(false) };
    let mut sim = Sim::new(c, vec![]);
    sim.run(Duration::from_secs(120));
    let menus = sim.played().iter().filter(|p| **p == PromptId::MenuNoHuman).count();
    assert_eq!(menus, 3);
    assert_eq!(sim.played().last(), Some(&PromptId::Goodbye));
    assert!(sim.callbacks().is_empty());
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu, Rung::Goodbye]);
    assert!(sim.hung_up.is_some());
    sim.assert_no_silence();
}

#[test]
fn an_unknown_key_says_so_and_counts_as_an_attempt() {
    // menu 1 -> '9' -> invalid -> menu 2 -> '#' -> invalid -> no more attempts: callback
    let t_menu2 = 4200 + 20 + 1000 + 2600 + 20;
    let mut sim =
        Sim::new(cfg(true), vec![(at(5220), In::Digit('9')), (at(t_menu2 + 500), In::Digit('#'))]);
    sim.run(Duration::from_secs(120));
    assert_eq!(
        sim.played(),
        vec![
            PromptId::HighDemand,
            PromptId::Menu,
            PromptId::MenuInvalid,
            PromptId::Menu,
            PromptId::MenuInvalid,
            PromptId::SorryCallback
        ]
    );
    assert_eq!(sim.callbacks(), vec![CallbackReason::MenuNoAnswer]);
    sim.assert_no_silence();
}

#[test]
fn key_2_plays_the_hold_prompt_at_once_and_starts_the_human() {
    let mut sim = Sim::new(
        cfg(true),
        vec![(at(6000), In::Digit('2')), (at(9000), In::Human(HumanOutcome::Connected))],
    );
    sim.run(Duration::from_secs(20));
    let i =
        sim.actions.iter().position(|a| *a == LadderAction::Play(PromptId::TransferHold)).unwrap();
    assert_eq!(sim.actions[i + 1], LadderAction::StartHuman);
    assert_eq!(sim.ladder.stage(), Stage::Connected);
    assert!(!sim.ladder.is_active());
    assert!(sim.actions.contains(&LadderAction::StopPrompt));
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu, Rung::Human, Rung::Connected]);
    // the person hangs up: so does the caller's leg
    let out = sim.ladder.human(sim.now, HumanOutcome::Ended);
    assert_eq!(out, vec![LadderAction::HangUp]);
    assert!(sim.callbacks().is_empty());
}

#[test]
fn the_human_not_answering_leads_to_a_callback_and_an_apology() {
    let mut sim = Sim::new(
        cfg(true),
        vec![(at(6000), In::Digit('2')), (at(31_000), In::Human(HumanOutcome::NoAnswer))],
    );
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.callbacks(), vec![CallbackReason::HumanNoAnswer]);
    assert_eq!(sim.played().last(), Some(&PromptId::SorryCallback));
    assert!(sim.actions.iter().any(
        |a| matches!(a, LadderAction::Callback { detail: Some(d), .. } if d.contains("25 s"))
    ));
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu, Rung::Human, Rung::Callback]);
    assert!(sim.hung_up.is_some());
    sim.assert_no_silence();
}

#[test]
fn an_unreachable_human_leads_to_a_callback_with_the_cause() {
    let cause = "carrier-b: 503".to_string();
    let mut sim = Sim::new(
        cfg(true),
        vec![
            (at(6000), In::Digit('2')),
            (at(6000), In::Human(HumanOutcome::Unavailable { cause })),
        ],
    );
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.callbacks(), vec![CallbackReason::HumanUnavailable]);
    assert!(sim.actions.iter().any(|a| matches!(a, LadderAction::Callback { detail: Some(d), .. } if d == "human: carrier-b: 503")));
    // the apology replaced the hold prompt at once
    assert_eq!(
        sim.played()[sim.played().len() - 2..],
        [PromptId::TransferHold, PromptId::SorryCallback]
    );
    sim.assert_no_silence();
}

#[test]
fn a_human_leg_that_never_reports_is_given_up_by_the_guard() {
    let mut sim = Sim::new(cfg(true), vec![(at(6000), In::Digit('2'))]);
    sim.run(Duration::from_secs(120));
    let stop = sim.actions.iter().position(|a| *a == LadderAction::StopHuman).expect("StopHuman");
    assert!(matches!(
        sim.actions[stop + 1],
        LadderAction::Callback { reason: CallbackReason::HumanNoAnswer, .. }
    ));
    let apology_at =
        sim.audio.iter().find(|(_, _, n)| n == "SorryCallback").map(|(a, _, _)| *a).unwrap();
    assert_eq!(apology_at, sim.t0 + at(6000) + Duration::from_secs(25) + HUMAN_GUARD);
    sim.assert_no_silence();
    // a late report changes nothing
    assert!(sim.ladder.human(sim.now, HumanOutcome::Connected).is_empty());
}

#[test]
fn the_caller_hanging_up_mid_menu_ends_cleanly_and_the_trail_says_where() {
    let mut sim = Sim::new(cfg(true), vec![(at(7000), In::CallerGone)]);
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.ladder.stage(), Stage::Done);
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu]);
    assert!(sim.callbacks().is_empty() && sim.hung_up.is_none());
    assert!(!sim.actions.contains(&LadderAction::StopHuman));
    assert_eq!(sim.ladder.poll_timeout(), None);
    assert!(sim.ladder.digit(sim.now, '1').is_empty(), "nothing after the caller left");
}

#[test]
fn the_caller_hanging_up_mid_transfer_stops_the_human_leg() {
    let mut sim =
        Sim::new(cfg(true), vec![(at(6000), In::Digit('2')), (at(12_000), In::CallerGone)]);
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.actions.last(), Some(&LadderAction::StopHuman));
    assert_eq!(sim.ladder.trail(), &[Rung::Prompt, Rung::Menu, Rung::Human]);
    assert_eq!(sim.ladder.poll_timeout(), None, "the guard is gone too");
    sim.assert_no_silence();
}

#[test]
fn without_the_menu_the_prompt_leads_straight_to_no_answer() {
    let mut sim =
        Sim::new(LadderConfig { menu: false, ..cfg(true) }, vec![(at(1000), In::Digit('1'))]);
    sim.run(Duration::from_secs(60));
    assert_eq!(
        sim.played(),
        vec![PromptId::HighDemand, PromptId::SorryCallback],
        "keys are ignored without the menu"
    );
    assert_eq!(sim.callbacks(), vec![CallbackReason::MenuNoAnswer]);
    let mut sim =
        Sim::new(LadderConfig { menu: false, no_answer: NoAnswer::Goodbye, ..cfg(false) }, vec![]);
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.played(), vec![PromptId::HighDemand, PromptId::Goodbye]);
    sim.assert_no_silence();
}

#[test]
fn keys_during_the_closing_prompt_are_ignored() {
    let mut sim = Sim::new(
        cfg(true),
        vec![(at(6000), In::Digit('1')), (at(7000), In::Digit('2')), (at(7500), In::Digit('9'))],
    );
    sim.run(Duration::from_secs(60));
    assert_eq!(sim.played(), vec![PromptId::HighDemand, PromptId::Menu, PromptId::CallbackConfirm]);
    assert!(!sim.actions.contains(&LadderAction::StartHuman));
}

/// Every path, each key at a few moments: no silence over 1 s between rungs anywhere.
#[test]
fn no_path_has_more_than_a_second_of_silence_between_rungs() {
    let mut worst = Duration::ZERO;
    let mut runs = 0;
    let outcomes = [
        HumanOutcome::Connected,
        HumanOutcome::NoAnswer,
        HumanOutcome::Unavailable { cause: "486 Busy Here".into() },
    ];
    for human in [false, true] {
        for no_answer in [NoAnswer::Callback, NoAnswer::Goodbye] {
            for attempts in 1..=3 {
                let c = LadderConfig {
                    human,
                    no_answer,
                    menu_attempts: attempts,
                    ..LadderConfig::default()
                };
                let mut scripts: Vec<Vec<(Duration, In)>> = vec![vec![]];
                for key in ['1', '2', '7'] {
                    for t in [500, 4300, 8000, 12_000, 30_000] {
                        scripts.push(vec![(at(t), In::Digit(key))]);
                        for o in &outcomes {
                            scripts.push(vec![
                                (at(t), In::Digit(key)),
                                (at(t + 3500), In::Human(o.clone())),
                                (at(t + 9000), In::Human(HumanOutcome::Ended)),
                            ]);
                        }
                        scripts.push(vec![(at(t), In::Digit(key)), (at(t + 1000), In::CallerGone)]);
                    }
                }
                for script in scripts {
                    let mut sim = Sim::new(c, script);
                    sim.run(Duration::from_secs(300));
                    sim.assert_no_silence();
                    worst = worst.max(sim.largest_gap());
                    runs += 1;
                }
            }
        }
    }
    println!("ladder_paths_simulated: {runs}");
    println!("ladder_largest_gap_between_rungs_ms: {}", worst.as_millis());
}
