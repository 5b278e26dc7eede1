// The bearer token for mutating calls. `make run` prints the dashboard URL
// with ?token=...; the page moves it into sessionStorage (so it survives a
// reload but not the tab) and removes it from the address bar.
const KEY = "microcloud.token";

export function takeTokenFromUrl(loc: Location, storage: Storage, history: History): string | null {
  const url = new URL(loc.href);
  const t = url.searchParams.get("token");
  if (t) {
    storage.setItem(KEY, t);
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + (url.search ? url.search : "") + url.hash);
    return t;
  }
  return storage.getItem(KEY);
}

export function saveToken(storage: Storage, token: string): void {
  if (token) storage.setItem(KEY, token);
  else storage.removeItem(KEY);
}
