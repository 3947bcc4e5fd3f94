// switchboard.d.ts against switchboard.js: what the declarations promise, the
// implementation has. tsc fails on any line below that does not hold; nothing here runs.

import * as Declared from '../../crates/server/assets/switchboard.js';
import * as Implemented from 'switchboard-implementation';

// Every export the declarations name exists in the module with a type that fits them:
// constants, SwitchboardError, Subscription, and Switchboard's constructor, statics and
// public members (the instance types compared member by member).
export const declaredExports: typeof Declared = Implemented;

// And nothing the module exports is left undeclared.
type Undeclared = Exclude<keyof typeof Implemented, keyof typeof Declared>;
export const undeclared: [Undeclared] extends [never] ? 'none' : Undeclared = 'none';

// Instances, spelled out: what a page holds is what the declarations describe.
export function instances(sb: Implemented.Switchboard, sub: Implemented.Subscription): [Declared.Switchboard, Declared.Subscription] {
  return [sb, sub];
}
