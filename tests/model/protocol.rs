//! The reference state machine: the model itself. It generates only the
//! steps the protocol allows in the current world, weighted, and applies
//! them with `World::step`.

use proptest::prelude::*;
use proptest::strategy::Union;
use proptest_state_machine::ReferenceStateMachine;

use crate::step::{Outcome, Step};
use crate::world::World;

pub struct Protocol;

/// How often the generator picks a step, against the others enabled.
/// Progress outweighs faults, or rows would rarely get through all five
/// steps (and ids would rarely be reused) within a sequence.
fn weight(step: Step) -> u32 {
    match step {
        Step::Claim(..)
        | Step::Send(_, _, Outcome::Ok)
        | Step::Land(..)
        | Step::Mark(..)
        | Step::BatchMark(..)
        | Step::Delete(..) => 10,
        Step::Insert(_) => 5,
        Step::AdvanceClock(_) => 3,
        Step::DropConnection(_) => 3,
        Step::Send(..) => 2,
        Step::Throttle(..) | Step::LostReply(..) | Step::Crash(_) => 1,
    }
}

impl ReferenceStateMachine for Protocol {
    type State = World;
    type Transition = Step;

    fn init_state() -> BoxedStrategy<World> {
        (2usize..=3).prop_map(World::new).boxed()
    }

    fn transitions(state: &World) -> BoxedStrategy<Step> {
        let weighted: Vec<(u32, BoxedStrategy<Step>)> = state
            .steps()
            .into_iter()
            .map(|step| (weight(step), Just(step).boxed()))
            .collect();
        Union::new_weighted(weighted).boxed()
    }

    fn apply(state: World, step: &Step) -> World {
        state.step(step)
    }

    fn preconditions(state: &World, step: &Step) -> bool {
        state.enabled(step)
    }
}
