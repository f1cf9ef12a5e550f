/**
 * A small typed event emitter. `on` returns the function that removes the
 * listener, so a React effect can return it as its cleanup and a listener
 * is never registered twice by accident.
 */
// biome-ignore lint: any is the constraint for listener argument tuples
type Listener = (...args: any[]) => void;

export class Emitter<Events extends { [K in keyof Events]: Listener }> {
  private listeners = new Map<keyof Events, Set<Listener>>();

  on<K extends keyof Events>(event: K, listener: Events[K]): () => void {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  off<K extends keyof Events>(event: K, listener: Events[K]): void {
    this.listeners.get(event)?.delete(listener);
  }

  /** How many listeners `event` has (tests use it to prove cleanups run). */
  listenerCount(event: keyof Events): number {
    return this.listeners.get(event)?.size ?? 0;
  }

  protected emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): void {
    const set = this.listeners.get(event);
    if (!set) return;
    // A copy: a listener may remove itself (or another) while we iterate.
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (e) {
        // One app listener's bug must not stop the others or the client.
        queueMicrotask(() => {
          throw e;
        });
      }
    }
  }
}
