# Test helpers.
#
# mc_add_unit_test(NAME name SOURCES ... LIBS ...): a cmocka test binary run
# by CTest. Unit tests need no services and may run in parallel.
#
# mc_add_integration_test(NAME ... SOURCES ... LIBS ...): a test that talks to
# the private nats-server and PostgreSQL that scripts/with-services started
# (NATS_URL, DATABASE_URL in the environment). They share those servers, so
# they hold the "services" resource lock and never run at the same time.
function(mc_add_unit_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  # The fuzz build compiles tests too (so per-test settings still apply) but
  # leaves them out of "all" and registers only the fuzz targets.
  if(MC_FUZZ)
    add_executable(${T_NAME} EXCLUDE_FROM_ALL ${T_SOURCES})
    target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
    return()
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  mc_target_warnings(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS unit TIMEOUT ${T_TIMEOUT})
endfunction()

function(mc_add_integration_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS" ${ARGN})
  # The fuzz build compiles tests too (so per-test settings still apply) but
  # leaves them out of "all" and registers only the fuzz targets.
  if(MC_FUZZ)
    add_executable(${T_NAME} EXCLUDE_FROM_ALL ${T_SOURCES})
    target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
    return()
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  mc_target_warnings(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} PkgConfig::CMOCKA)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS integration
    RESOURCE_LOCK services TIMEOUT ${T_TIMEOUT})
endfunction()

# mc_add_fuzz_target(NAME name SOURCES ... LIBS ... CORPUS dir [RUNS n])
#
# A fuzz target defines LLVMFuzzerTestOneInput. In the normal (gcc) builds it
# is linked with a small driver that replays every file of the corpus, so the
# corpus is a regression test under ASan/UBSan. In the MC_FUZZ build (clang)
# it is a real libFuzzer binary and the test runs it for a fixed number of
# iterations starting from the corpus (a copy, so the repo is not written).
function(mc_add_fuzz_target)
  cmake_parse_arguments(T "" "NAME;CORPUS;RUNS" "SOURCES;LIBS" ${ARGN})
  if(NOT T_RUNS)
    set(T_RUNS 20000)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  mc_target_warnings(${T_NAME})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS})
  if(MC_FUZZ)
    target_link_options(${T_NAME} PRIVATE -fsanitize=fuzzer)
    add_test(NAME ${T_NAME}
      COMMAND ${CMAKE_COMMAND} -E env ASAN_OPTIONS=detect_leaks=1
              ${PROJECT_SOURCE_DIR}/tests/fuzz/run-fuzzer $<TARGET_FILE:${T_NAME}> ${T_CORPUS} ${T_RUNS})
  else()
    target_sources(${T_NAME} PRIVATE ${PROJECT_SOURCE_DIR}/tests/fuzz/corpus_driver.c)
    add_test(NAME ${T_NAME} COMMAND ${T_NAME} ${T_CORPUS})
  endif()
  set_tests_properties(${T_NAME} PROPERTIES LABELS fuzz TIMEOUT 600)
endfunction()
