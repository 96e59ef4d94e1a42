# Driver of the consumer test (cmake -P): install karx into a fresh prefix, configure
# tests/consumer against it in a fresh build directory, build it, run it, check its output.
# Variables: KARX_BUILD_DIR, WORK_DIR, SOURCE_DIR, CXX_COMPILER, SCAN_DEPS, BUILD_TYPE, GENERATOR.
file(REMOVE_RECURSE ${WORK_DIR})
set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)

function(step what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer test: ${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

step("cmake --install" ${CMAKE_COMMAND} --install ${KARX_BUILD_DIR} --prefix ${prefix})
step("configuring the consumer" ${CMAKE_COMMAND} -S ${SOURCE_DIR} -B ${build} -G ${GENERATOR}
     -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_CXX_COMPILER_CLANG_SCAN_DEPS=${SCAN_DEPS}
     -DCMAKE_BUILD_TYPE=${BUILD_TYPE} -DCMAKE_PREFIX_PATH=${prefix})
step("building the consumer" ${CMAKE_COMMAND} --build ${build})
step("running the consumer" ${build}/consumer)
if(NOT step_output MATCHES "consumer: 1 \\+ 2 = 3, 6 \\* 7 = 42")
  message(FATAL_ERROR "consumer test: unexpected output: ${step_output}")
endif()
message(STATUS "${step_output}")
