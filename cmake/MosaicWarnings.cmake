# mosaic_target_defaults(target): warnings (as errors when MOSAIC_WERROR)
# for project code only; third-party headers come in as SYSTEM includes.
function(mosaic_target_defaults target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wno-unused-parameter>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${MOSAIC_WERROR}>>:-Werror>
    # GCC 12 at -O3 reports a false -Wrestrict inside std::string for
    # `"literal" + std::string&&` (GCC bug 105329).
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<CXX_COMPILER_ID:GNU>>:-Wno-restrict>)
  target_include_directories(${target} PUBLIC ${PROJECT_SOURCE_DIR})
endfunction()

# mosaic_add_test(name SOURCES ... LIBS ... [LABELS ...])
# CASES: register one ctest entry per listed test (NAME.CASE, run with
# --gtest_filter=*.CASE, each in its own process) instead of one for the binary.
function(mosaic_add_test name)
  cmake_parse_arguments(T "" "" "SOURCES;LIBS;LABELS;CASES" ${ARGN})
  add_executable(${name} ${T_SOURCES})
  mosaic_target_defaults(${name})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  if(T_CASES)
    foreach(case ${T_CASES})
      add_test(NAME ${name}.${case} COMMAND ${name} --gtest_filter=*.${case})
      set_tests_properties(${name}.${case} PROPERTIES
        ENVIRONMENT "MOSAIC_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data;OPENBLAS_NUM_THREADS=2"
        TIMEOUT 120)
      if(T_LABELS)
        set_tests_properties(${name}.${case} PROPERTIES LABELS "${T_LABELS}")
      endif()
    endforeach()
    return()
  endif()
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES
    ENVIRONMENT "MOSAIC_TEST_DATA=${PROJECT_SOURCE_DIR}/tests/data;OPENBLAS_NUM_THREADS=2"
    TIMEOUT 300)
  if(T_LABELS)
    set_tests_properties(${name} PROPERTIES LABELS "${T_LABELS}")
  endif()
endfunction()
