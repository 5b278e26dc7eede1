import { describe, expect, it } from "vitest";
import { saveToken, takeTokenFromUrl } from "./token";

describe("token", () => {
  it("moves the token from the URL into sessionStorage and out of the address bar", () => {
    window.history.replaceState(null, "", "/?token=abc&x=1#h");
    sessionStorage.clear();
    const t = takeTokenFromUrl(window.location, sessionStorage, window.history);
    expect(t).toBe("abc");
    expect(window.location.search).toBe("?x=1");
    expect(window.location.hash).toBe("#h");
    // A reload without the parameter still finds it.
    expect(takeTokenFromUrl(window.location, sessionStorage, window.history)).toBe("abc");
    saveToken(sessionStorage, "");
    expect(takeTokenFromUrl(window.location, sessionStorage, window.history)).toBeNull();
  });
});
